import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BlockLayer } from '../../src/index.js';

const KiB = 1024;
let dir: string;
let layer: BlockLayer;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-merge-'));
  layer = new BlockLayer();
});
afterEach(async () => {
  vi.restoreAllMocks();
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Bytes whose value depends on their offset, so a block read from the wrong place shows. */
function pattern(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 7 + (i >> 12)) & 0xff;
  return out;
}

describe("file driver, aio: 'threads': adjacent requests of one turn are merged", () => {
  it('8 adjacent reads issued together go as one preadv, each buffer getting its own bytes', async () => {
    const file = path.join(dir, 'a.img');
    const data = pattern(64 * KiB);
    fs.writeFileSync(file, data);
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'threads', readOnly: true });
    const readv = vi.spyOn(fs, 'readv');
    const bufs = Array.from({ length: 8 }, () => new Uint8Array(4 * KiB));
    await Promise.all(bufs.map((b, i) => d.read(8 * KiB + i * 4 * KiB, b)));
    expect(readv).toHaveBeenCalledTimes(1);
    expect(Buffer.concat(bufs)).toEqual(Buffer.from(data.subarray(8 * KiB, 40 * KiB)));
  });

  it('reads that do not follow each other go one by one', async () => {
    const file = path.join(dir, 'b.img');
    const data = pattern(64 * KiB);
    fs.writeFileSync(file, data);
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'threads', readOnly: true });
    const readv = vi.spyOn(fs, 'readv');
    const offsets = [0, 16 * KiB, 8 * KiB, 40 * KiB];
    const bufs = offsets.map(() => new Uint8Array(4 * KiB));
    await Promise.all(bufs.map((b, i) => d.read(offsets[i], b)));
    expect(readv).not.toHaveBeenCalled();
    for (const [i, b] of bufs.entries()) expect(b).toEqual(data.subarray(offsets[i], offsets[i] + 4 * KiB));
  });

  it('adjacent writes issued together go as one pwritev and land where each belongs', async () => {
    const file = path.join(dir, 'c.img');
    fs.writeFileSync(file, new Uint8Array(64 * KiB));
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'threads' });
    const writev = vi.spyOn(fs, 'writev');
    const data = pattern(32 * KiB);
    await Promise.all(Array.from({ length: 8 }, (_, i) => d.write(16 * KiB + i * 4 * KiB, data.subarray(i * 4 * KiB, (i + 1) * 4 * KiB))));
    await d.flush();
    expect(writev).toHaveBeenCalledTimes(1);
    const onDisk = fs.readFileSync(file);
    expect(new Uint8Array(onDisk.subarray(16 * KiB, 48 * KiB))).toEqual(data);
    expect(onDisk.subarray(0, 16 * KiB).every((b) => b === 0)).toBe(true);
  });

  it('a merged read that meets the end of a file that shrank reads zeros from there, as single reads do', async () => {
    const file = path.join(dir, 'd.img');
    const data = pattern(16 * KiB);
    fs.writeFileSync(file, data);
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'threads', readOnly: true, locking: 'off' });
    fs.truncateSync(file, 6000);
    const bufs = Array.from({ length: 4 }, () => new Uint8Array(4 * KiB).fill(0xee));
    await Promise.all(bufs.map((b, i) => d.read(i * 4 * KiB, b)));
    const expected = new Uint8Array(16 * KiB);
    expected.set(data.subarray(0, 6000));
    expect(Buffer.concat(bufs)).toEqual(Buffer.from(expected));
  });

  it('a merged read that fails is retried request by request: each settles with its own outcome', async () => {
    const file = path.join(dir, 'e.img');
    const data = pattern(16 * KiB);
    fs.writeFileSync(file, data);
    const d = await layer.openDrive({ driver: 'file', filename: file, aio: 'threads', readOnly: true });
    const readv = vi.spyOn(fs, 'readv').mockImplementation(((_fd: number, _b: unknown, _p: unknown, cb: (e: Error | null, n: number) => void) =>
      setImmediate(() => cb(Object.assign(new Error('EIO: injected'), { code: 'EIO', errno: -5 }), 0))) as unknown as typeof fs.readv);
    const bufs = Array.from({ length: 4 }, () => new Uint8Array(4 * KiB));
    await Promise.all(bufs.map((b, i) => d.read(i * 4 * KiB, b)));
    expect(readv).toHaveBeenCalledTimes(1);
    expect(Buffer.concat(bufs)).toEqual(Buffer.from(data));
  });
});
