import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BlockError, BlockLayer } from '../../src/index.js';

// What the file driver refuses to open, and with which code. A FIFO must be refused without a
// blocking open(2): one blocked open holds a libuv worker until a writer appears, and a few of
// them freeze every fs call in the process.

let dir: string;
const servers: net.Server[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-refuse-'));
});
afterEach(async () => {
  vi.restoreAllMocks();
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Guard against a hang on the old code; far above what a refusal takes. */
const HANG_GUARD_MS = 5000;

function fifo(name: string): string {
  const p = path.join(dir, name);
  execFileSync('mkfifo', [p]);
  return p;
}

function regularFile(name: string, content = Buffer.alloc(4096, 0x5a)): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, content);
  return p;
}

function open(filename: string, readOnly: boolean) {
  return new BlockLayer().openDrive({ driver: 'file', filename, readOnly });
}

/** Wakes any open(2) blocked on the FIFOs (a writer appearing) until `until` settles. */
async function wakeBlockedReaders(fifos: string[], until: Promise<unknown>): Promise<void> {
  let settled = false;
  void until.then(() => {
    settled = true;
  });
  for (let round = 0; round < 500 && !settled; round++) {
    for (const f of fifos) {
      try {
        if (!fs.statSync(f).isFIFO()) continue;
        // Non-blocking write-side open: succeeds only while a reader waits, and releases it.
        fs.closeSync(fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
      } catch {
        // ENXIO: nobody is waiting on this one.
      }
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Settles `work`; if it is still pending after the guard, unblocks the FIFO readers and says 'hung'. */
async function withoutHang<T>(work: Promise<T>, fifos: string[]): Promise<PromiseSettledResult<T> | 'hung'> {
  const settled: Promise<PromiseSettledResult<T>> = work.then(
    (value) => ({ status: 'fulfilled', value }),
    (reason: unknown) => ({ status: 'rejected', reason }),
  );
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<'hung'>((resolve) => {
    timer = setTimeout(() => resolve('hung'), HANG_GUARD_MS);
  });
  const outcome = await Promise.race([settled, guard]);
  clearTimeout(timer);
  if (outcome === 'hung') await wakeBlockedReaders(fifos, settled);
  return outcome;
}

/** The rejection of an open, checked to be a BlockError naming the file and the `filename` field. */
async function refusal(filename: string, readOnly: boolean): Promise<BlockError> {
  const outcome = await withoutHang(open(filename, readOnly), [filename]);
  if (outcome === 'hung') throw new Error(`opening ${filename} hung`);
  if (outcome.status === 'fulfilled') {
    await outcome.value.close();
    throw new Error(`opening ${filename} ${readOnly ? 'read-only' : 'read-write'} succeeded`);
  }
  const e = outcome.reason;
  expect(e).toBeInstanceOf(BlockError);
  expect(e).toMatchObject({ path: filename, field: 'filename', message: expect.stringContaining(filename) });
  return e as BlockError;
}

describe('file driver refusals', () => {
  it('FIFOs are refused with EINVAL at once, and no libuv worker is left blocked', async () => {
    const poolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4;
    const fifos = Array.from({ length: 2 * poolSize }, (_, i) => fifo(`fifo${i}`));
    const file = regularFile('plain.img', Buffer.from('still readable'));
    const work = (async () => {
      const opens = Promise.allSettled(fifos.map((f) => open(f, true)));
      // With every worker stuck in open(2) this read would queue forever.
      const text = (await fs.promises.readFile(file)).toString();
      return { text, opens: await opens };
    })();
    const outcome = await withoutHang(work, fifos);
    expect(outcome).not.toBe('hung');
    if (outcome === 'hung' || outcome.status === 'rejected') throw new Error('hung or failed');
    expect(outcome.value.text).toBe('still readable');
    for (const [i, r] of outcome.value.opens.entries()) {
      expect(r.status).toBe('rejected');
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(BlockError);
        expect(r.reason).toMatchObject({ code: 'EINVAL', path: fifos[i], field: 'filename' });
        expect(r.reason.message).toMatch(/FIFO/);
      }
    }
  });

  it('a FIFO opened read-write is refused with EINVAL naming the file', async () => {
    const f = fifo('rw.fifo');
    const e = await refusal(f, false);
    expect(e.code).toBe('EINVAL');
    expect(e.message).toMatch(/regular file or a block device/);
  });

  it('a symlink to a FIFO is refused like the FIFO itself', async () => {
    const f = fifo('target.fifo');
    const link = path.join(dir, 'link.img');
    fs.symlinkSync(f, link);
    expect((await refusal(link, true)).code).toBe('EINVAL');
  });

  it('a FIFO swapped in after the stat check is refused after opening, without blocking', async () => {
    const f = fifo('swapped.fifo');
    const plain = regularFile('plain.img');
    const realStat = fs.promises.stat;
    // The race: the path was a regular file when stat looked, a FIFO when open(2) runs.
    vi.spyOn(fs.promises, 'stat').mockImplementation((p, opts) => realStat(p === f ? plain : p, opts) as never);
    const outcome = await withoutHang(open(f, true), [f]);
    expect(outcome).not.toBe('hung');
    if (outcome === 'hung') return;
    expect(outcome.status).toBe('rejected');
    if (outcome.status === 'rejected') {
      expect(outcome.reason).toBeInstanceOf(BlockError);
      expect(outcome.reason).toMatchObject({ code: 'EINVAL', path: f, field: 'filename' });
      // Refused for what it is, not by a later failure (a seek on a pipe).
      expect(outcome.reason.message).toMatch(/is a FIFO/);
    }
  });

  it('a unix socket is refused with EINVAL', async () => {
    const sock = path.join(dir, 'sock');
    const server = net.createServer();
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    expect((await refusal(sock, true)).code).toBe('EINVAL');
    expect((await refusal(sock, false)).code).toBe('EINVAL');
  });

  it.each(['/dev/null', '/dev/zero'])('the character device %s is refused with EINVAL', async (dev) => {
    const ro = await refusal(dev, true);
    expect(ro.code).toBe('EINVAL');
    expect(ro.message).toMatch(/character device/);
    expect((await refusal(dev, false)).code).toBe('EINVAL');
  });

  it('a directory is refused with EISDIR, read-only and read-write', async () => {
    const e = await refusal(dir, true);
    expect(e.code).toBe('EISDIR');
    expect((await refusal(dir, false)).code).toBe('EISDIR');
  });

  it('a symlink loop is refused with ELOOP', async () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    fs.symlinkSync(b, a);
    fs.symlinkSync(a, b);
    expect((await refusal(a, true)).code).toBe('ELOOP');
    expect((await refusal(a, false)).code).toBe('ELOOP');
  });

  it('a path through a regular file is refused with ENOTDIR', async () => {
    const through = path.join(regularFile('plain.img'), 'disk.img');
    expect((await refusal(through, true)).code).toBe('ENOTDIR');
    expect((await refusal(through, false)).code).toBe('ENOTDIR');
  });

  it('a 5000-character name is refused with ENAMETOOLONG', async () => {
    const long = path.join(dir, 'x'.repeat(5000));
    expect((await refusal(long, true)).code).toBe('ENAMETOOLONG');
    expect((await refusal(long, false)).code).toBe('ENAMETOOLONG');
  });

  it('a symlink to a regular file opens read-write and its I/O works', async () => {
    const target = regularFile('target.img');
    const link = path.join(dir, 'link.img');
    fs.symlinkSync(target, link);
    const d = await open(link, false);
    expect(d.length).toBe(4096);
    await d.write(10, new Uint8Array([1, 2, 3]));
    expect(Array.from(await d.read(9, 5))).toEqual([0x5a, 1, 2, 3, 0x5a]);
    await d.flush();
    await d.close();
    expect(Array.from(fs.readFileSync(target).subarray(9, 14))).toEqual([0x5a, 1, 2, 3, 0x5a]);
  });
});
