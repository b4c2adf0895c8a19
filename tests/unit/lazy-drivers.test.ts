// The built-in drivers whose code loads on first use: each stub in the registry must say what its
// driver says (name, capabilities, roles, probe, schemas, create, check), and open, create and
// check through it must reach the driver.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinDrivers } from '../../src/drivers/builtin.js';
import * as named from '../../src/drivers/index.js';
import { nbdDriver } from '../../src/drivers/nbd/index.js';
import { BlockError } from '../../src/errors.js';
import { BlockLayer } from '../../src/index.js';
import type { BlockDriver } from '../../src/node/driver.js';
import { builtOnce, lazyDriver } from '../../src/node/lazy-driver.js';
import { nullDriver } from '../../src/drivers/null.js';

const real: Record<string, BlockDriver> = {
  qcow2: named.qcow2Driver,
  http: named.httpDriver,
  vpc: named.vpcDriver,
  vhdx: named.vhdxDriver,
  vdi: named.vdiDriver,
  vmdk: named.vmdkDriver,
  nbd: nbdDriver as BlockDriver,
  raw: named.rawDriver,
  memory: named.memoryDriver,
  null: named.nullDriver,
  blkdebug: named.blkdebugDriver,
};

describe('lazy built-in drivers', () => {
  it('keeps the registry order: portable drivers, then the host ones', () => {
    expect(builtinDrivers().map((d) => d.name)).toEqual(['raw', 'memory', 'null', 'blkdebug', 'qcow2', 'http', 'vpc', 'vhdx', 'vdi', 'vmdk', 'file', 'rbd', 'nbd']);
  });

  it('each stub states what its driver states, down to the schema instances', () => {
    for (const stub of builtinDrivers()) {
      const driver = real[stub.name];
      if (driver === undefined) continue; // file, rbd: registered as they are
      expect(stub.capabilities, stub.name).toEqual(driver.capabilities);
      expect(stub.children, stub.name).toEqual(driver.children);
      expect(stub.probe, stub.name).toBe(driver.probe);
      expect(stub.schema, stub.name).toBe(driver.schema);
      expect(stub.check === undefined, stub.name).toBe(driver.check === undefined);
      expect(stub.create === undefined, stub.name).toBe(driver.create === undefined);
      if (stub.create && driver.create) expect(stub.create.schema, stub.name).toBe(driver.create.schema);
    }
  });

  it('opens, creates and checks through the stub with the driver it loads', async () => {
    const layer = new BlockLayer();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-lazy-'));
    try {
      const filename = path.join(dir, 'new.vdi');
      fs.writeFileSync(filename, '');
      const file = await layer.openNode({ driver: 'file', filename });
      expect(layer.drivers.get('vdi')).not.toBe(named.vdiDriver);
      await layer.drivers.get('vdi').create?.create(file, 4 * 2 ** 20, {});
      const vdi = await layer.openNode({ driver: 'vdi', file });
      expect(vdi.length).toBe(4 * 2 ** 20);
      const checked = await layer.drivers.get('vdi').check?.(file, {});
      expect(checked?.corruptions).toBe(0);
      await vdi.unref();
      await file.unref();
      // what was written is a VDI qemu-img would read: its header's signature
      expect(fs.readFileSync(filename).readUInt32LE(0x40)).toBe(0xbeda107f);
    } finally {
      await layer.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an unknown driver as before, naming the known ones', () => {
    const layer = new BlockLayer();
    expect(() => layer.drivers.get('qed')).toThrow(/unknown driver 'qed' \(known: raw, memory, null, blkdebug, qcow2, http, vpc/);
  });

  it('builds a schema once, when first asked for', () => {
    let builds = 0;
    const schema = builtOnce(() => ({ n: ++builds }));
    expect(builds).toBe(0);
    expect(schema()).toBe(schema());
    expect(builds).toBe(1);
  });

  it('imports once; a failed import is tried again, and a driver without create or check says so', async () => {
    let imports = 0;
    let fail = true;
    const stub = lazyDriver({
      name: 'late',
      capabilities: nullDriver.capabilities,
      schema: () => nullDriver.schema,
      createSchema: () => nullDriver.schema as never,
      checks: true,
      load: async () => {
        imports++;
        if (fail) throw new Error('chunk missing');
        return nullDriver as BlockDriver as never;
      },
    });
    const layer = new BlockLayer();
    try {
      layer.registerDriver(stub);
      await expect(layer.openNode({ driver: 'late', size: 512 } as never)).rejects.toThrow('chunk missing');
      fail = false;
      const node = await layer.openNode({ driver: 'late', size: 512 } as never);
      expect(node.length).toBe(512);
      await layer.openNode({ driver: 'late', size: 512 } as never).then((n) => n.unref());
      expect(imports).toBe(2);
      const err = await stub.create?.create(node, 512, {}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BlockError);
      expect((err as BlockError).code).toBe('ENOTSUP');
      await node.unref();
    } finally {
      await layer.close();
    }
  });
});
