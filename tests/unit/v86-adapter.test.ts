import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type V86DiskErrorEvent, type V86DiskOptions, toV86Disk } from '../../src/adapters/v86.js';
import { VirtualClock } from '../../src/clock.js';
import { BlockLayer } from '../../src/index.js';

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
/** Resolves with what v86's callback got. */
const got = (call: (fn: (d: Uint8Array) => void) => void) => new Promise<Uint8Array>((resolve) => call(resolve));
/** The drive's bytes as a plain Uint8Array (drives answer with Node Buffers). */
const bytes = async (p: Promise<Uint8Array>) => new Uint8Array(await p);
const tick = () => new Promise((r) => setTimeout(r, 10));

let rejections: unknown[] = [];
const onRejection = (e: unknown) => rejections.push(e);
beforeEach(() => {
  rejections = [];
  process.on('unhandledRejection', onRejection);
});
afterEach(() => {
  process.off('unhandledRejection', onRejection);
  expect(rejections).toEqual([]);
});

async function memoryDisk(size = 64 * 1024) {
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ driver: 'memory', size });
  return { layer, drive, disk: toV86Disk(drive) };
}

/** A disk on a 64 KiB memory drive whose blkdebug rule fails requests with EIO, and the io-errors it emitted. */
async function failingDisk(rule: { event: 'read' | 'write'; once?: boolean }, options: V86DiskOptions = {}) {
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ driver: 'blkdebug', rules: [{ ...rule, code: 'EIO' }], file: { driver: 'memory', size: '64K' } });
  const disk = toV86Disk(drive, options);
  const errors: V86DiskErrorEvent[] = [];
  disk.on('io-error', (e) => errors.push(e));
  return { disk, errors };
}

describe('v86 disk adapter', () => {
  it('is what v86 takes as-is: byteLength, get/set/load, and load() calls onload', async () => {
    const { disk, drive } = await memoryDisk();
    expect(disk.byteLength).toBe(drive.length);
    expect(typeof disk.get === 'function' && typeof disk.set === 'function' && typeof disk.load === 'function').toBe(true);
    let loaded = 0;
    disk.onload = () => loaded++;
    disk.load();
    expect(loaded).toBe(1);
  });

  it('a drive still opening: load() calls onload once it is open, then byteLength and reads are the drive\'s', async () => {
    const layer = new BlockLayer();
    let opened!: (d: Awaited<ReturnType<BlockLayer['openDrive']>>) => void;
    const opening = new Promise<Awaited<ReturnType<BlockLayer['openDrive']>>>((resolve) => {
      opened = resolve;
    });
    const disk = toV86Disk(opening);
    expect(disk.byteLength).toBe(0);
    expect(() => disk.drive).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    let loaded = 0;
    disk.onload = () => loaded++;
    disk.load();
    await tick();
    expect(loaded).toBe(0);
    const drive = await layer.openDrive({ driver: 'memory', size: 64 * 1024 });
    await drive.write(1024, pattern(512, 5));
    opened(drive);
    expect(await disk.opened).toBe(drive);
    expect(loaded).toBe(1);
    expect(disk.byteLength).toBe(drive.length);
    expect(disk.drive).toBe(drive);
    expect(await got((fn) => disk.get(1024, 512, fn))).toEqual(pattern(512, 5));
    await layer.close();
  });

  it('a drive whose open fails: load() emits io-error (operation open) and never calls onload; opened rejects; nothing is unhandled', async () => {
    const layer = new BlockLayer();
    const failing = layer.openDrive({ driver: 'qcow2', file: { driver: 'memory', size: 4096 } });
    const disk = toV86Disk(failing);
    const errors: V86DiskErrorEvent[] = [];
    disk.on('io-error', (e) => errors.push(e));
    let loaded = 0;
    disk.onload = () => loaded++;
    disk.load();
    await expect(disk.opened).rejects.toMatchObject({ code: expect.any(String) });
    await tick();
    expect(loaded).toBe(0);
    expect(errors.map((e) => e.operation)).toEqual(['open']);
    const code = await failing.then(
      () => 'opened',
      (e: { code: string }) => e.code,
    );
    expect(errors[0].error.code).toBe(code);
    // a disk nobody loads or awaits leaves no unhandled rejection either
    toV86Disk(layer.openDrive({ driver: 'qcow2', file: { driver: 'memory', size: 4096 } })).opened.catch(() => undefined);
    toV86Disk(Promise.reject(new Error('gone')));
    await tick();
    await layer.close();
  });

  it('get answers with the drive bytes', async () => {
    const { disk, drive } = await memoryDisk();
    await drive.write(1024, pattern(1024, 3));
    expect(await got((fn) => disk.get(1024, 1024, fn))).toEqual(pattern(1024, 3));
  });

  it('set writes through to the drive and calls back once the drive has the data', async () => {
    const { disk, drive } = await memoryDisk();
    const seen = await new Promise<Uint8Array>((resolve) => disk.set(512, pattern(512, 9), () => resolve(bytes(drive.read(512, 512)))));
    expect(seen).toEqual(pattern(512, 9));
    expect(disk.pendingWrites).toBe(0);
  });

  it('set copies the data before the asynchronous write (v86 may pass a view of guest memory)', async () => {
    const { disk, drive } = await memoryDisk();
    const guestMemory = new Uint8Array(4096);
    guestMemory.set(pattern(512, 1), 1024);
    const view = guestMemory.subarray(1024, 1536);
    const done = new Promise<void>((resolve) => disk.set(0, view, resolve));
    guestMemory.fill(0xee); // the guest reuses its buffer at once
    await done;
    expect(await bytes(drive.read(0, 512))).toEqual(pattern(512, 1));
  });

  it('a read issued while a write is still held by the drive sees the written data, and writes keep their order', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const drive = await layer.openDrive({ driver: 'memory', size: 64 * 1024, throttle: { iopsWrite: 1 } });
    const disk = toV86Disk(drive);
    const order: number[] = [];
    disk.set(8192, pattern(512, 1), () => order.push(1)); // uses the burst
    disk.set(0, pattern(512, 2), () => order.push(2)); // held by the limit
    disk.set(0, pattern(512, 3), () => order.push(3)); // same sector: must land after the one before
    await tick();
    expect(drive.stats().throttle?.queuedWrites).toBeGreaterThan(0);
    expect(await got((fn) => disk.get(0, 1024, fn))).toEqual(Uint8Array.from([...pattern(512, 3), ...new Uint8Array(512)]));
    while (disk.pendingWrites > 0) await clock.advance(1000);
    expect(order).toEqual([1, 2, 3]);
    expect(await bytes(drive.read(0, 512))).toEqual(pattern(512, 3));
  });

  it('get_and_cache keeps what it read so get_from_cache answers synchronously; set updates the cached bytes', async () => {
    const { disk, drive } = await memoryDisk();
    await drive.write(0, pattern(1024, 5));
    expect(disk.get_from_cache(0, 512)).toBeUndefined();
    expect(await got((fn) => disk.get_and_cache(0, 512, fn))).toEqual(pattern(512, 5));
    expect(disk.get_from_cache(0, 512)).toEqual(pattern(512, 5));
    expect(disk.get_from_cache(256, 256)).toEqual(pattern(512, 5).subarray(256));
    expect(disk.get_from_cache(0, 1024)).toBeUndefined(); // not all cached
    // The answer is a copy: changing it does not change the cache.
    disk.get_from_cache(0, 512)?.fill(0);
    expect(disk.get_from_cache(0, 512)).toEqual(pattern(512, 5));
    // A cached read calls back synchronously, like v86's own buffers.
    let sync: Uint8Array | undefined;
    disk.get(0, 512, (d) => {
      sync = d;
    });
    expect(sync).toEqual(pattern(512, 5));
    disk.set(256, pattern(256, 77), () => {});
    expect(disk.get_from_cache(256, 256)).toEqual(pattern(256, 77));
    await disk.flush();
  });

  it('a write issued while get_and_cache is reading is not lost from the cache', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const drive = await layer.openDrive({ driver: 'memory', size: 64 * 1024, throttle: { iopsRead: 1 } });
    await drive.write(0, pattern(512, 1));
    const disk = toV86Disk(drive);
    await got((fn) => disk.get(4096, 512, fn)); // spends the read burst
    const cached = got((fn) => disk.get_and_cache(0, 512, fn)); // held
    await tick();
    disk.set(0, pattern(512, 2), () => {});
    while (disk.pendingWrites > 0) await clock.advance(1000);
    await clock.advance(2000);
    await cached;
    expect(disk.get_from_cache(0, 512)).toEqual(pattern(512, 2));
  });

  it('a failed read emits io-error and never calls back (the guest times out instead of reading zeros)', async () => {
    const { disk, errors } = await failingDisk({ event: 'read' });
    let called = 0;
    disk.get(512, 512, () => called++);
    disk.get_and_cache(0, 512, () => called++);
    await tick();
    expect(called).toBe(0);
    expect(errors.map((e) => [e.operation, e.offset, e.length, e.error.code])).toEqual([
      ['read', 512, 512, 'EIO'],
      ['read', 0, 512, 'EIO'],
    ]);
    expect(disk.get_from_cache(0, 512)).toBeUndefined();
  });

  it('a read past the end is an io-error, not an exception or an unhandled rejection', async () => {
    const { disk } = await memoryDisk(4096);
    const errors: V86DiskErrorEvent[] = [];
    disk.on('io-error', (e) => errors.push(e));
    expect(() => disk.get(4096, 512, () => {})).not.toThrow();
    await tick();
    expect(errors).toHaveLength(1);
    expect(errors[0].error.code).toBe('EINVAL');
  });

  it('a write to a read-only drive emits io-error with EROFS and is never reported as done', async () => {
    const layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'memory', size: '64K', readOnly: true });
    const disk = toV86Disk(drive);
    const errors: V86DiskErrorEvent[] = [];
    disk.on('io-error', (e) => errors.push(e));
    let called = 0;
    disk.set(0, pattern(512, 1), () => called++);
    await tick();
    expect(called).toBe(0);
    expect(errors.map((e) => [e.operation, e.offset, e.length, e.error.code])).toEqual([['write', 0, 512, 'EROFS']]);
    expect(disk.pendingWrites).toBe(0);
  });

  it('with no io-error listener a failure still creates no unhandled rejection', async () => {
    const layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'memory', size: '64K', readOnly: true });
    const disk = toV86Disk(drive);
    disk.set(0, pattern(512, 1), () => {});
    disk.get(1 << 20, 512, () => {});
    await tick();
  });

  it('a read v86 aborted (controller reset) is dropped silently', async () => {
    const { disk } = await memoryDisk();
    const errors: V86DiskErrorEvent[] = [];
    disk.on('io-error', (e) => errors.push(e));
    const abort = new AbortController();
    abort.abort();
    let called = 0;
    disk.get(0, 512, () => called++, { signal: abort.signal });
    await tick();
    expect(called).toBe(0);
    expect(errors).toEqual([]);
  });

  it('a callback that throws surfaces as an uncaught error, not as an unhandled rejection', async () => {
    const { disk } = await memoryDisk();
    const uncaught: unknown[] = [];
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    try {
      disk.get(0, 512, () => {
        throw new Error('v86 bug');
      });
      await tick();
    } finally {
      process.off('uncaughtException', onUncaught);
      for (const l of listeners) process.on('uncaughtException', l);
    }
    expect(uncaught).toMatchObject([{ message: 'v86 bug' }]);
  });

  it('get_state/set_state carry the cache, so the geometry probe works after a restore', async () => {
    const { disk, drive } = await memoryDisk();
    await drive.write(0, pattern(512, 4));
    await got((fn) => disk.get_and_cache(0, 512, fn));
    const state = disk.get_state();
    const { disk: other } = await memoryDisk();
    other.set_state(state);
    expect(other.get_from_cache(0, 512)).toEqual(pattern(512, 4));
    expect(() => other.set_state([[[0, new Uint8Array(3)]]])).toThrow(/block 0/);
  });

  it('get_buffer hands over the whole disk, or nothing above maxBufferBytes', async () => {
    const layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'memory', size: 8192 });
    await drive.write(4096, pattern(512, 6));
    const whole = await new Promise<ArrayBuffer | undefined>((resolve) => toV86Disk(drive).get_buffer(resolve));
    expect(whole?.byteLength).toBe(8192);
    expect(new Uint8Array(whole as ArrayBuffer, 4096, 512)).toEqual(pattern(512, 6));
    const none = await new Promise<ArrayBuffer | undefined>((resolve) => toV86Disk(drive, { maxBufferBytes: 4096 }).get_buffer(resolve));
    expect(none).toBeUndefined();
  });

  describe('read-ahead', () => {
    /** A disk with read-ahead over a memory drive of 256 KiB holding a known pattern. */
    async function readaheadDisk(readahead = 64 * 1024) {
      const layer = new BlockLayer();
      const drive = await layer.openDrive({ driver: 'memory', size: 256 * 1024 });
      await drive.write(0, pattern(256 * 1024, 1));
      return { layer, drive, disk: toV86Disk(drive, { readahead }), reads: () => drive.stats().rdOperations };
    }

    it('a short read fetches the aligned chunk around it once; later reads inside it answer synchronously from memory', async () => {
      const { disk, reads } = await readaheadDisk();
      const before = reads();
      expect(await got((fn) => disk.get(70_000 & ~511, 512, fn))).toEqual(pattern(256 * 1024, 1).subarray(70_000 & ~511, (70_000 & ~511) + 512));
      expect(reads() - before).toBe(1);
      let sync: Uint8Array | undefined;
      disk.get(65536 + 16384, 16384, (d) => {
        sync = d;
      });
      expect(sync).toEqual(pattern(256 * 1024, 1).subarray(65536 + 16384, 65536 + 32768));
      expect(reads() - before).toBe(1);
      // the answer is a copy: changing it does not change the chunk
      sync?.fill(0);
      expect(await got((fn) => disk.get(65536 + 16384, 512, fn))).toEqual(pattern(256 * 1024, 1).subarray(65536 + 16384, 65536 + 16384 + 512));
    });

    it('reads as long as the read-ahead, or longer, go straight to the drive', async () => {
      const { disk, reads } = await readaheadDisk(4096);
      const before = reads();
      await got((fn) => disk.get(0, 4096, fn));
      await got((fn) => disk.get(0, 512, fn));
      expect(reads() - before).toBe(2);
    });

    it('a read across two chunks reads both and answers with its bytes', async () => {
      const { disk, reads } = await readaheadDisk(4096);
      const before = reads();
      expect(await got((fn) => disk.get(4096 - 512, 1024, fn))).toEqual(pattern(256 * 1024, 1).subarray(4096 - 512, 4096 + 512));
      expect(reads() - before).toBe(2);
    });

    it('reads of a chunk still reading wait for it instead of reading again', async () => {
      const { disk, reads } = await readaheadDisk();
      const before = reads();
      const [a, b] = await Promise.all([got((fn) => disk.get(0, 512, fn)), got((fn) => disk.get(8192, 512, fn))]);
      expect(a).toEqual(pattern(512, 1));
      expect(b).toEqual(pattern(256 * 1024, 1).subarray(8192, 8704));
      expect(reads() - before).toBe(1);
    });

    it("the disk's writes reach the chunks: a later read from memory sees them, and the drive has them", async () => {
      const { disk, drive } = await readaheadDisk();
      await got((fn) => disk.get(0, 512, fn));
      await new Promise<void>((resolve) => disk.set(1024, pattern(512, 9), resolve));
      let sync: Uint8Array | undefined;
      disk.get(1024, 512, (d) => {
        sync = d;
      });
      expect(sync).toEqual(pattern(512, 9));
      expect(await bytes(drive.read(1024, 512))).toEqual(pattern(512, 9));
    });

    it('a write issued while its chunk is reading is not lost from the chunk', async () => {
      // a drive whose reads answer with the bytes it held when they started, when the test says so
      const held = new Uint8Array(64 * 1024).fill(1);
      const answers: (() => void)[] = [];
      const drive = {
        id: 'slow',
        length: held.length,
        read: (offset: number, length: number) =>
          new Promise<Uint8Array>((resolve) => {
            const snapshot = held.slice(offset, offset + length);
            answers.push(() => resolve(snapshot));
          }),
        write: async (offset: number, data: Uint8Array) => {
          held.set(data, offset);
        },
        flush: async () => undefined,
      } as unknown as Parameters<typeof toV86Disk>[0];
      const disk = toV86Disk(drive, { readahead: 4096 });
      const first = got((fn) => disk.get(0, 512, fn));
      await tick(); // the chunk's read has taken its snapshot
      await new Promise<void>((resolve) => disk.set(512, pattern(512, 2), resolve));
      for (const answer of answers) answer();
      expect(await first).toEqual(new Uint8Array(512).fill(1));
      let sync: Uint8Array | undefined;
      disk.get(512, 512, (d) => {
        sync = d;
      });
      expect(sync).toEqual(pattern(512, 2));
    });

    it('get_and_cache reads through the chunks and still fills the cache get_from_cache answers from', async () => {
      const { disk, reads } = await readaheadDisk();
      const before = reads();
      expect(await got((fn) => disk.get_and_cache(0, 512, fn))).toEqual(pattern(512, 1));
      expect(disk.get_from_cache(0, 512)).toEqual(pattern(512, 1));
      expect(await got((fn) => disk.get(512, 16384, fn))).toEqual(pattern(256 * 1024, 1).subarray(512, 16896));
      expect(reads() - before).toBe(1);
    });

    it('a failed chunk read is an io-error of each read waiting for it (no callback); the next read asks the drive again', async () => {
      const { disk, errors } = await failingDisk({ event: 'read', once: true }, { readahead: 4096 });
      let called = 0;
      disk.get(512, 512, () => called++);
      disk.get(1024, 1024, () => called++);
      await tick();
      expect(called).toBe(0);
      expect(errors.map((e) => [e.operation, e.offset, e.length, e.error.code])).toEqual([
        ['read', 512, 512, 'EIO'],
        ['read', 1024, 1024, 'EIO'],
      ]);
      expect(await got((fn) => disk.get(512, 512, fn))).toEqual(new Uint8Array(512));
    });

    it('a failed write drops the chunks it patched: the next read there asks the drive', async () => {
      const { disk } = await failingDisk({ event: 'write' }, { readahead: 4096 });
      await got((fn) => disk.get(0, 512, fn));
      disk.set(0, pattern(512, 3), () => {});
      await tick();
      expect(disk.pendingWrites).toBe(0);
      expect(await got((fn) => disk.get(0, 512, fn))).toEqual(new Uint8Array(512));
    });

    it('a read past the end is still an io-error, and a read v86 aborted meanwhile is dropped', async () => {
      const { disk } = await readaheadDisk();
      const errors: V86DiskErrorEvent[] = [];
      disk.on('io-error', (e) => errors.push(e));
      disk.get(256 * 1024, 512, () => {});
      const abort = new AbortController();
      let called = 0;
      disk.get(0, 512, () => called++, { signal: abort.signal });
      abort.abort();
      await tick();
      expect(called).toBe(0);
      expect(errors.map((e) => e.error.code)).toEqual(['EINVAL']);
    });

    it('keeps the last 32 chunks: an older one is read again', async () => {
      const { disk, reads } = await readaheadDisk(4096);
      for (let i = 0; i < 33; i++) await got((fn) => disk.get(i * 4096, 512, fn));
      const before = reads();
      await got((fn) => disk.get(32 * 4096, 512, fn));
      expect(reads() - before).toBe(0);
      await got((fn) => disk.get(0, 512, fn));
      expect(reads() - before).toBe(1);
    });

    it('refuses a read-ahead that is not a multiple of 256 bytes', async () => {
      const { drive } = await memoryDisk();
      expect(() => toV86Disk(drive, { readahead: 1000 })).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'readahead' }));
      expect(() => toV86Disk(drive, { readahead: -256 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    });
  });

  it('imports nothing from node: (it goes in browser builds)', () => {
    const source = (file: string) => fs.readFileSync(new URL(file, import.meta.url), 'utf8');
    const runtimeImports = (text: string) => [...text.matchAll(/^import (?!type )[^;]*? from '([^']+)'/gm)].map((m) => m[1]);
    const adapter = runtimeImports(source('../../src/adapters/v86.ts'));
    expect(adapter.sort()).toEqual(['../errors.js', 'eventemitter3']);
    expect(runtimeImports(source('../../src/errors.ts'))).toEqual([]);
  });

  it('is published as the blocklayer/v86 subpath', () => {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    expect(pkg.exports['./v86']).toEqual({
      require: { types: './dist/adapters/v86.d.cts', default: './dist/adapters/v86.cjs' },
      types: './dist/adapters/v86.d.ts',
      import: './dist/adapters/v86.js',
      default: './dist/adapters/v86.js',
    });
    expect(pkg.typesVersions['*'].v86).toEqual(['./dist/adapters/v86.d.ts']);
  });
});
