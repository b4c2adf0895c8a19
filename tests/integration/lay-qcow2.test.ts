// layQcow2Image (the browser build's qcow2 creation on a node) writes what qemu-img create
// writes, byte for byte, a backing URL included; qemu-img check finds the image clean.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { layQcow2Image } from '../../src/tools/create-on-node.js';
import { haveProgram } from '../helpers/tools.js';

const have = haveProgram('qemu-img');

describe.skipIf(!have)('layQcow2Image', () => {
  it.each([
    ['a 1 GiB image', ['1G'], { size: '1G' }],
    ['8 GiB, 4 KiB clusters, compat 0.10', ['-o', 'cluster_size=4096,compat=0.10', '8G'], { size: '8G', clusterSize: 4096, compat: '0.10' }],
    ['an overlay over an http URL', ['-u', '-b', 'http://127.0.0.1:1/base.qcow2', '-F', 'qcow2', '16M'], { size: '16M', backing: 'http://127.0.0.1:1/base.qcow2', backingFormat: 'qcow2' }],
  ] as const)('%s: the bytes of qemu-img create, on a node that held other data', async (_name, qemuArgs, options) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lay-qcow2-'));
    try {
      const ref = path.join(dir, 'ref.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...qemuArgs.slice(0, -1), ref, qemuArgs[qemuArgs.length - 1]]);
      const want = fs.readFileSync(ref);
      const layer = new BlockLayer();
      try {
        const node = await layer.openNode({ driver: 'memory', size: 4 << 20 });
        await node.write(0, new Uint8Array(4 << 20).fill(0xee));
        const made = await layQcow2Image(layer, node, options);
        expect(made.fileLength).toBe(want.length);
        expect(node.length).toBe(want.length);
        const got = new Uint8Array(node.length);
        await node.read(0, got);
        expect(Buffer.from(got).equals(want)).toBe(true);
        const mine = path.join(dir, 'mine.qcow2');
        fs.writeFileSync(mine, got);
        // (this qemu-img has no curl to open an http backing file with: checked without backing ones)
        if (!('backing' in options)) execFileSync('qemu-img', ['check', '-q', mine]);
        await node.unref();
      } finally {
        await layer.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses what needs a file (falloc preallocation, a data file) with ENOTSUP', async () => {
    const layer = new BlockLayer();
    try {
      const node = await layer.openNode({ driver: 'memory', size: 0 });
      await expect(layQcow2Image(layer, node, { size: '1M', preallocation: 'falloc' })).rejects.toMatchObject({ code: 'ENOTSUP', field: 'preallocation' });
      await expect(layQcow2Image(layer, node, { size: '1M', dataFile: 'x.raw' })).rejects.toMatchObject({ code: 'ENOTSUP', field: 'dataFile' });
      await node.unref();
    } finally {
      await layer.close();
    }
  });
});
