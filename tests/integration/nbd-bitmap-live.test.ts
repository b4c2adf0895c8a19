// A recording dirty bitmap served over NBD while writes go on: every map, by a client nobody here
// wrote (nbdinfo), shows the writes made before it, also when it asks the very ranges an earlier
// map asked (the server keeps a bitmap's answers per range while the bitmap does not change).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, NbdServer } from '../../src/index.js';
import { haveQemuTools } from '../helpers/qemu-images.js';
import { haveProgram, ok } from '../helpers/tools.js';

const CI = process.env.CI === 'true';
const have = haveQemuTools() && haveProgram('nbdinfo');
if (CI && !have) throw new Error('qemu-img/qemu-io/nbdinfo missing in CI');
if (!have) console.log('NBD live bitmap test skipped: it needs qemu-utils (qemu-img, qemu-io) and libnbd-bin (nbdinfo)');

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
let dir: string;
const layer = new BlockLayer();

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-nbd-bitmap-live-'));
});
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!have)('a recording bitmap served over NBD', () => {
  it('each map shows every write made before it, a map asked again included', async () => {
    const disk = path.join(dir, 'live.raw');
    await ok('qemu-img', ['create', '-q', '-f', 'raw', disk, String(SIZE)]);
    const d = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: disk } });
    d.addDirtyBitmap('live', { granularity: 65536 });
    const socket = path.join(dir, 'o.sock');
    const server = new NbdServer({ exports: [{ name: 'w', drive: d, bitmaps: ['live'] }] });
    await server.listen({ path: socket });
    const u = `nbd+unix:///w?socket=${socket}`;
    const dirty = async () =>
      (JSON.parse(await ok('nbdinfo', ['--map=qemu:dirty-bitmap:live', '--json', u])) as { offset: number; length: number; type: number }[])
        .filter((e) => e.type === 1)
        .map((e) => [e.offset, e.length]);
    try {
      expect(await dirty()).toEqual([]);
      expect(await dirty()).toEqual([]);
      // A write inside one granule through the drive (the write path's one-bit case).
      await d.write(70000, Buffer.alloc(100, 1));
      expect(await dirty()).toEqual([[65536, 65536]]);
      expect(await dirty()).toEqual([[65536, 65536]]);
      // Writes over NBD by another client, over granules.
      await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 2 5M 200k', u]);
      expect(await dirty()).toEqual([
        [65536, 65536],
        [5 * MiB, 256 * 1024],
      ]);
      // Zeroes through the drive dirty what they cover too.
      await d.writeZeroes(SIZE - 4096, 4096);
      expect(await dirty()).toEqual([
        [65536, 65536],
        [5 * MiB, 256 * 1024],
        [SIZE - 65536, 65536],
      ]);
    } finally {
      await server.close();
      await d.close();
    }
  });
});
