import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { imageOptions } from '../../src/image-options.js';
import { BlockLayer, NbdServer } from '../../src/index.js';
import { pickFormat, readProbeHead } from '../../src/node/probe.js';

const FIX = path.join(import.meta.dirname, '../fixtures/qcow2');
const layer = new BlockLayer();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-probe-'));
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("driver: 'auto' (format probing on the open protocol node)", () => {
  it('each format driver scores the head: qcow2 its magic, raw anything (the fallback); the highest wins', () => {
    const drivers = [...layer.drivers.list()];
    const magic = new Uint8Array(512);
    magic.set([0x51, 0x46, 0x49, 0xfb]);
    expect(layer.drivers.get('qcow2').probe?.(magic)).toBe(100);
    expect(layer.drivers.get('raw').probe?.(new Uint8Array(0))).toBe(1);
    expect(pickFormat(drivers, magic).name).toBe('qcow2');
    expect(pickFormat(drivers, new Uint8Array(512)).name).toBe('raw');
    expect(pickFormat(drivers, new Uint8Array([0x51, 0x46])).name).toBe('raw');
  });

  it('opens the format it finds over the file child it opened, and reads the head at least a sector, less for a short node', async () => {
    const q = await layer.openNode({ driver: 'auto', readOnly: true, file: { driver: 'file', filename: path.join(FIX, 'v3.qcow2'), locking: 'off' } });
    expect(q.driver.name).toBe('qcow2');
    expect(q.child('file')?.driver.name).toBe('file');
    expect((await readProbeHead(q.child('file')!)).length).toBe(512);
    await q.unref();
    const short = path.join(dir, 'short.raw');
    fs.writeFileSync(short, 'abc');
    const r = await layer.openNode({ driver: 'auto', file: { driver: 'file', filename: short } });
    expect(r.driver.name).toBe('raw');
    expect(r.length).toBe(3);
    expect((await readProbeHead(r.child('file')!)).length).toBe(3);
    await r.unref();
  });

  it('a snapshot name on a raw image is refused as the CLI refused it; formatOptions go to the format found only', async () => {
    const raw = path.join(dir, 'a.raw');
    fs.writeFileSync(raw, Buffer.alloc(4096));
    await expect(layer.openNode({ driver: 'auto', file: { driver: 'file', filename: raw }, snapshot: 's' })).rejects.toMatchObject({
      code: 'EINVAL',
      message: '--snapshot: raw images have no snapshots',
    });
    const q = await layer.openNode({ driver: 'auto', readOnly: true, file: { driver: 'file', filename: path.join(FIX, 'v3.qcow2'), locking: 'off' }, formatOptions: { qcow2: { l2CacheSize: 65536 }, raw: { offset: 512 } } });
    expect(q.driver.name).toBe('qcow2');
    await q.unref();
    await expect(layer.openNode({ driver: 'auto', file: null } as never)).rejects.toMatchObject({ code: 'EINVAL', field: 'file' });
  });

  it('imageOptions builds the probing tree without opening anything; a missing file is still ENOENT', () => {
    expect(imageOptions(path.join(FIX, 'v3.qcow2'))).toEqual({ driver: 'auto', readOnly: true, file: { driver: 'file', filename: path.join(FIX, 'v3.qcow2'), readOnly: true } });
    expect(imageOptions('http://127.0.0.1:1/x.img')).toMatchObject({ driver: 'auto', file: { driver: 'http' } });
    expect(imageOptions('nbd://127.0.0.1:1/x', { snapshot: 's' })).toMatchObject({ driver: 'auto', snapshot: 's', file: { driver: 'nbd' } });
    expect(() => imageOptions(path.join(dir, 'nope'))).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('over NBD: one connection, kept by the qcow2 node it probed', async () => {
    const bytes = await layer.openDrive({ driver: 'file', filename: path.join(FIX, 'v3.qcow2'), readOnly: true, locking: 'off' });
    const server = new NbdServer({ exports: [{ name: 'q', drive: bytes }] });
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected TCP');
    try {
      const node = await layer.openNode({ driver: 'auto', readOnly: true, file: { driver: 'nbd', server: { type: 'inet', host: '127.0.0.1', port: a.port }, export: 'q' } });
      expect(node.driver.name).toBe('qcow2');
      expect(server.connectionCount).toBe(1);
      await node.unref();
    } finally {
      await server.close();
      await bytes.close();
    }
  });
});
