import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';

let dir: string;
const KiB = 1024;
const MiB = 1024 * KiB;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-file-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A sparse file of `size` with data written at the given (offset, length) ranges. */
function sparseFile(size: number, data: [number, number][]): string {
  const file = path.join(dir, 'sparse.img');
  const fd = fs.openSync(file, 'w+');
  fs.ftruncateSync(fd, size);
  for (const [off, len] of data) fs.writeSync(fd, Buffer.alloc(len, 0x5a), 0, len, off);
  fs.closeSync(fd);
  return file;
}

/** Whether this file system reports holes (tmpfs and ext4 do). */
function supportsHoles(file: string): boolean {
  return fs.statSync(file).blocks * 512 < fs.statSync(file).size;
}

describe('file driver', () => {
  it('blockStatus reports the holes and data of a sparse file exactly', async () => {
    const file = sparseFile(4 * MiB, [
      [64 * KiB, 64 * KiB],
      [1 * MiB, 4 * KiB],
      [3 * MiB, 512 * KiB],
    ]);
    if (!supportsHoles(file)) throw new Error(`${dir} does not support sparse files; run with TMPDIR on ext4/xfs/tmpfs`);
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file, readOnly: true });
    const map = (await d.blockStatusMap()).map((e) => [e.offset, e.length, e.data, e.zero]);
    expect(map).toEqual([
      [0, 64 * KiB, false, true],
      [64 * KiB, 64 * KiB, true, false],
      [128 * KiB, MiB - 128 * KiB, false, true],
      [MiB, 4 * KiB, true, false],
      [MiB + 4 * KiB, 2 * MiB - 4 * KiB, false, true],
      [3 * MiB, 512 * KiB, true, false],
      [3 * MiB + 512 * KiB, 512 * KiB, false, true],
    ]);
    const s = await d.blockStatus(70 * KiB, 10 * KiB);
    expect(s).toMatchObject({ offset: 70 * KiB, length: 10 * KiB, data: true });
    await d.close();
  });

  it('reads and writes positionally through raw over file, and flush succeeds', async () => {
    const file = sparseFile(MiB, []);
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: file } });
    const data = Buffer.from('hello, block layer');
    await d.write(12345, data);
    await d.flush();
    expect(Buffer.from(await d.read(12345, data.length)).toString()).toBe('hello, block layer');
    await d.close();
    expect(fs.readFileSync(file).subarray(12345, 12345 + data.length).toString()).toBe('hello, block layer');
  });

  it('writeZeroes and discard make the range read as zeros; discard punches a hole', async () => {
    const file = sparseFile(MiB, [[0, MiB]]);
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file });
    await d.writeZeroes(100, 5000);
    const z = await d.read(0, 6000);
    expect(z[99]).toBe(0x5a);
    expect(z.subarray(100, 5100).every((b) => b === 0)).toBe(true);
    expect(z[5100]).toBe(0x5a);
    await d.discard(256 * KiB, 256 * KiB);
    expect((await d.read(256 * KiB, 256 * KiB)).every((b) => b === 0)).toBe(true);
    const s = await d.blockStatus(256 * KiB, 256 * KiB);
    expect(s).toMatchObject({ offset: 256 * KiB, length: 256 * KiB, data: false, zero: true });
    await d.close();
  });

  it('opening a missing file fails with ENOENT naming the file', async () => {
    const layer = new BlockLayer();
    const missing = path.join(dir, 'nope.img');
    await expect(layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: missing } })).rejects.toMatchObject({
      code: 'ENOENT',
      message: expect.stringContaining(missing),
    });
  });

  it('a read-only file drive refuses writes with EROFS and leaves the file as it was', async () => {
    const file = sparseFile(64 * KiB, [[0, 64 * KiB]]);
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file, readOnly: true });
    await expect(d.write(0, new Uint8Array(10))).rejects.toMatchObject({ code: 'EROFS' });
    await expect(d.writeZeroes(0, 10)).rejects.toMatchObject({ code: 'EROFS' });
    await expect(d.discard(0, 4096)).rejects.toMatchObject({ code: 'EROFS' });
    expect(d.stats().invalidWrOperations).toBe(2);
    await d.close();
    expect(fs.readFileSync(file).every((b) => b === 0x5a)).toBe(true);
  });
});
