import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadPosixBackend, type PosixBackendName, type PosixCalls, posixBackend } from '../../src/drivers/file/posix.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-posix-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const SIZE = 1024 * 1024;

/** A sparse 1 MiB file with data at [0, 4 KiB) and [512 KiB, 516 KiB). */
function sparseFile(name: string): string {
  const file = path.join(dir, name);
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 0);
  fs.writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 512 * 1024);
  fs.ftruncateSync(fd, SIZE);
  fs.closeSync(fd);
  return file;
}

const backends = (['fs-ext', 'koffi', 'none'] as PosixBackendName[]).map((name) => [name, loadPosixBackend(name)] as const);

/** What a backend answers for each question on the same file: the system calls must agree. */
async function answers(calls: PosixCalls, fd: number) {
  const settle = (p: Promise<number>) => p.then((n) => n, (e: NodeJS.ErrnoException) => e.code);
  return {
    end: await settle(calls.seek(fd, 0, 'end')),
    data0: await settle(calls.seek(fd, 0, 'data')),
    hole0: await settle(calls.seek(fd, 0, 'hole')),
    data8k: await settle(calls.seek(fd, 8192, 'data')),
    hole600k: await settle(calls.seek(fd, 600 * 1024, 'hole')),
    dataAtEnd: await settle(calls.seek(fd, SIZE, 'data')),
  };
}

describe('posix calls (lseek, flock) from fs-ext, koffi or neither', () => {
  it('one backend is chosen for the process: fs-ext where it built, else koffi, else none', () => {
    const expected = backends.find(([, b]) => b !== null)?.[0];
    expect(posixBackend()).toBe(expected);
  });

  for (const [name, calls] of backends.filter(([n]) => n !== 'none')) {
    describe.skipIf(calls === null)(name, () => {
      it('SEEK_END gives the size; SEEK_DATA/SEEK_HOLE find data and holes; SEEK_DATA at the end is ENXIO', async () => {
        const fd = fs.openSync(sparseFile(`seek-${name}`), 'r');
        try {
          const a = await answers(calls as PosixCalls, fd);
          expect(a.end).toBe(SIZE);
          expect(a.data0).toBe(0);
          // A file system without holes reports one data extent up to the end of the file.
          expect(a.hole0).toBeGreaterThanOrEqual(4096);
          expect(a.hole0).toBeLessThanOrEqual(SIZE);
          expect(a.data8k).toBeGreaterThanOrEqual(8192);
          expect(a.data8k).toBeLessThanOrEqual(512 * 1024);
          expect(a.hole600k).toBe(600 * 1024);
          expect(a.dataAtEnd).toBe('ENXIO');
        } finally {
          fs.closeSync(fd);
        }
      });

      it('errors come back with their errno name (EBADF on a closed descriptor)', async () => {
        const fd = fs.openSync(sparseFile(`badf-${name}`), 'r');
        fs.closeSync(fd);
        await expect((calls as PosixCalls).seek(fd, 0, 'end')).rejects.toMatchObject({ code: 'EBADF' });
        await expect((calls as PosixCalls).flock(fd, 'shared')).rejects.toMatchObject({ code: 'EBADF' });
      });

      it('flock never blocks: a held exclusive lock refuses others with EWOULDBLOCK/EAGAIN until unlocked', async () => {
        const file = sparseFile(`flock-${name}`);
        const a = fs.openSync(file, 'r');
        const b = fs.openSync(file, 'r');
        const c = calls as PosixCalls;
        try {
          await c.flock(a, 'exclusive');
          for (const mode of ['exclusive', 'shared'] as const) {
            const err = await c.flock(b, mode).then(() => undefined, (e: NodeJS.ErrnoException) => e);
            expect(['EWOULDBLOCK', 'EAGAIN']).toContain(err?.code);
          }
          await c.flock(a, 'unlock');
          await c.flock(b, 'shared');
          await c.flock(a, 'shared');
          await expect(c.flock(a, 'exclusive').then(() => 'locked', (e: NodeJS.ErrnoException) => e.code)).resolves.toMatch(/^(EWOULDBLOCK|EAGAIN)$/);
        } finally {
          fs.closeSync(a);
          fs.closeSync(b);
        }
      });
    });
  }

  it.skipIf(backends.filter(([n, b]) => n !== 'none' && b !== null).length < 2)('fs-ext and koffi give the same answers', async () => {
    const fd = fs.openSync(sparseFile('same'), 'r');
    try {
      const [fsExt, koffi] = backends.filter(([n]) => n !== 'none').map(([, b]) => b as PosixCalls);
      expect(await answers(koffi, fd)).toEqual(await answers(fsExt, fd));
    } finally {
      fs.closeSync(fd);
    }
  });

  it('neither: the size from fstat; SEEK_DATA/SEEK_HOLE and flock are ENOTSUP (callers count everything as data, go on unlocked)', async () => {
    const none = loadPosixBackend('none') as PosixCalls;
    expect(none.name).toBe('none');
    const fd = fs.openSync(sparseFile('none'), 'r');
    try {
      expect(await answers(none, fd)).toEqual({ end: SIZE, data0: 'ENOTSUP', hole0: 'ENOTSUP', data8k: 'ENOTSUP', hole600k: 'ENOTSUP', dataAtEnd: 'ENOTSUP' });
      await expect(none.flock(fd, 'exclusive')).rejects.toMatchObject({ code: 'ENOTSUP' });
    } finally {
      fs.closeSync(fd);
    }
  });
});
