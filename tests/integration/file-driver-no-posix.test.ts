/**
 * The file driver where neither fs-ext nor koffi can call lseek/flock (posix.ts's last fallback):
 * the size comes from fstat, every byte counts as data, and I/O works as anywhere else.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BlockLayer } from '../../src/index.js';

vi.mock('../../src/drivers/file/posix.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/drivers/file/posix.js')>();
  const none = real.loadPosixBackend('none');
  if (none === null) throw new Error('the fallback backend always loads');
  return { ...real, seek: none.seek, flock: none.flock, posixBackend: () => 'none' };
});

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-noposix-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('file driver without lseek/flock', () => {
  it('opens with the fstat size, reads and writes, and reports the whole file as data', async () => {
    const file = path.join(dir, 'sparse.img');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 1024 * 1024);
    const layer = new BlockLayer();
    try {
      const d = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: file } });
      expect(d.length).toBe(1024 * 1024);
      await d.write(4096, Buffer.alloc(4096, 7));
      const back = Buffer.alloc(4096);
      await d.read(4096, back);
      expect(back.every((b) => b === 7)).toBe(true);
      const map = await d.blockStatusMap();
      expect(map.map((e) => [e.offset, e.length, e.data])).toEqual([[0, 1024 * 1024, true]]);
      // …where the real calls see the holes (so the answer above is the fallback's).
      const real = await vi.importActual<typeof import('../../src/drivers/file/posix.js')>('../../src/drivers/file/posix.js');
      const fd = fs.openSync(file, 'r');
      try {
        if (real.posixBackend() !== 'none') expect(await real.seek(fd, 0, 'hole')).toBe(0);
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      await layer.close();
    }
  });
});
