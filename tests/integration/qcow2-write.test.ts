import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { Drive } from '../../src/index.js';
import { imageSuite } from '../helpers/image-suite.js';
import { haveQemuTools, qemuImg, qemuIo } from '../helpers/qemu-images.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('qcow2 write tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const suite = imageSuite('blocklayer-qcow2-write-');
const { p, layer } = suite;

const open = (image: string, extra: Record<string, unknown> = {}) =>
  layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image }, ...extra });

/** qemu-img check's verdict: corruptions and leaks (0 when absent from the JSON); -U (force share) as for any image in use, which it may be. */
function check(image: string): { corruptions: number; leaks: number; errors: number } {
  const r = spawnSync('qemu-img', ['check', '-U', '--output=json', image], { encoding: 'utf8', cwd: suite.dir });
  const j = JSON.parse(r.stdout) as Record<string, number>;
  return { corruptions: j.corruptions ?? 0, leaks: j.leaks ?? 0, errors: j['check-errors'] ?? 0 };
}

/** The guest content according to qemu-img convert -O raw (optionally of a snapshot). */
function qemuContent(image: string, snapshot?: string): Buffer {
  const out = p('out.raw');
  qemuImg('convert', '-O', 'raw', ...(snapshot ? ['-l', `snapshot.name=${snapshot}`] : []), image, out);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

/** A small seeded generator (tests are reproducible). */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return (n: number) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

function pattern(len: number, tag: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 512) b.fill((tag + i / 512) & 0xff, i, Math.min(len, i + 512));
  return b;
}

interface Exercise {
  ops: number;
  maxLen: number;
  seed: number;
  /** Also issue writeZeroes and discards. */
  zeroes?: boolean;
  /** Discards keep the old data (v2 with a backing file: QEMU leaves those clusters alone). */
  discardKeeps?: boolean;
  clusterSize: number;
}

/** Random writes (and zeroes/discards) through our driver, mirrored in `model`. */
async function exercise(d: Drive, model: Buffer, o: Exercise): Promise<void> {
  const r = rng(o.seed);
  for (let i = 0; i < o.ops; i++) {
    const off = r(model.length);
    const len = Math.min(1 + r(o.maxLen), model.length - off);
    const kind = o.zeroes ? r(6) : 0;
    if (kind === 4) {
      await d.writeZeroes(off, len);
      model.fill(0, off, off + len);
    } else if (kind === 5) {
      await d.discard(off, len);
      const a = Math.ceil(off / o.clusterSize) * o.clusterSize;
      const b = Math.floor((off + len) / o.clusterSize) * o.clusterSize;
      if (a < b && !o.discardKeeps) model.fill(0, a, b);
    } else {
      const data = pattern(len, i + 1);
      await d.write(off, data);
      data.copy(model, off);
    }
  }
}

async function expectClean(image: string, model: Buffer, d?: Drive): Promise<void> {
  if (d) {
    expect(Buffer.from(await d.read(0, d.length)).equals(model)).toBe(true);
    await d.close();
  }
  expect(check(image)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
  expect(qemuContent(image).equals(model)).toBe(true);
}

describe.skipIf(!available)('qcow2 writes: qemu-img check finds no corruption or leak and qemu-img reads our data', () => {
  it('random writes into a fresh v3 image (64 KiB clusters) read back, and qemu-img convert gives the same bytes', async () => {
    const img = p('fresh.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    const d = await open(img);
    const model = Buffer.alloc(d.length);
    await exercise(d, model, { ops: 150, maxLen: 200_000, seed: 1, clusterSize: 65536 });
    await expectClean(img, model, d);
  });

  it('data written by qemu-io reads back through our driver, and our overwrite of it in place keeps its neighbours', async () => {
    const img = p('qemu-io.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '4M');
    qemuIo(img, ['write -P 0xab 64k 128k', 'write -P 0xcd 1M 4k']);
    const d = await open(img);
    expect(Buffer.from(await d.read(64 * 1024, 128 * 1024)).equals(Buffer.alloc(128 * 1024, 0xab))).toBe(true);
    await d.write(100 * 1024, Buffer.alloc(1000, 0x11));
    const model = Buffer.alloc(d.length);
    model.fill(0xab, 64 * 1024, 192 * 1024);
    model.fill(0xcd, 1024 * 1024, 1028 * 1024);
    model.fill(0x11, 100 * 1024, 100 * 1024 + 1000);
    await expectClean(img, model, d);
  });

  it('flush makes writes durable: a second open sees them, and the image stays clean across sessions', async () => {
    const img = p('flush.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '8M');
    const model = Buffer.alloc(8 << 20);
    const d = await open(img);
    await exercise(d, model, { ops: 40, maxLen: 100_000, seed: 2, clusterSize: 65536 });
    await d.flush();
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
    await exercise(d, model, { ops: 40, maxLen: 100_000, seed: 3, clusterSize: 65536 });
    await d.close();
    const again = await open(img);
    await exercise(again, model, { ops: 40, maxLen: 100_000, seed: 4, clusterSize: 65536 });
    await expectClean(img, model, again);
  });

  it('concurrent writes: overlapping and same-cluster writes in flight at once never allocate a cluster twice and keep arrival order', async () => {
    const img = p('concurrent.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '4M');
    const d = await open(img);
    const model = Buffer.alloc(d.length);
    const r = rng(5);
    for (let round = 0; round < 5; round++) {
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 64; i++) {
        // Crowd a few clusters so that requests meet.
        const off = r(8) * 65536 + r(65536 + 4096) + round * 512 * 1024;
        const len = Math.min(1 + r(20_000), model.length - off);
        const data = pattern(len, round * 64 + i);
        data.copy(model, off);
        writes.push(d.write(off, data));
      }
      await Promise.all(writes);
    }
    await expectClean(img, model, d);
  });

  it('writes into an overlay copy the untouched part of each cluster from the backing file', async () => {
    const base = p('base.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
    qemuIo(base, ['write -P 0x5a 0 4M']);
    const img = p('overlay.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', img);
    const d = await open(img);
    const model = Buffer.alloc(d.length, 0x5a);
    await exercise(d, model, { ops: 60, maxLen: 70_000, seed: 6, zeroes: true, clusterSize: 65536 });
    await expectClean(img, model, d);
  });

  it('v2 (compat=0.10) image with a backing file: zero data instead of zero flags, discard keeps the backing hidden', async () => {
    const base = p('base2.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', base, '2M');
    qemuIo(base, ['write -P 0x66 0 2M']);
    const img = p('v2.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', base, '-F', 'qcow2', img);
    const d = await open(img);
    const model = Buffer.alloc(d.length, 0x66);
    await exercise(d, model, { ops: 60, maxLen: 150_000, seed: 7, zeroes: true, discardKeeps: true, clusterSize: 65536 });
    await expectClean(img, model, d);
  });

  for (const cs of [512, 4096, 2 * 1024 * 1024]) {
    it(`cluster size ${cs}: writes, zeroes and discards`, async () => {
      const img = p(`cs${cs}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, img, '8M');
      const d = await open(img);
      const model = Buffer.alloc(d.length);
      await exercise(d, model, { ops: 80, maxLen: 4 * cs + 3000, seed: cs, zeroes: true, clusterSize: cs });
      await expectClean(img, model, d);
    });
  }

  for (const bits of [1, 2, 4, 8, 16, 32, 64]) {
    it(`refcount_bits=${bits} with 512-byte clusters: new refcount blocks and a relocated refcount table`, async () => {
      const img = p(`rc${bits}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=512,refcount_bits=${bits}`, img, '6M');
      const before = fs.statSync(img).size;
      const tableAt = fs.readFileSync(img).readBigUInt64BE(48);
      const d = await open(img, { l2CacheSize: 4096, refcountCacheSize: 2048 });
      const model = Buffer.alloc(d.length);
      // Fill most of the disk: far more clusters than the first refcount block and table cover.
      for (let off = 0; off < 5 << 20; off += 96 * 1024) {
        const data = pattern(64 * 1024 + 700, off >> 10);
        await d.write(off, data);
        data.copy(model, off);
      }
      await exercise(d, model, { ops: 60, maxLen: 3000, seed: bits, zeroes: true, clusterSize: 512 });
      await expectClean(img, model, d);
      expect(fs.statSync(img).size).toBeGreaterThan(before);
      // One table cluster covers 64 blocks: with wide entries 6 MiB of 512-byte clusters outgrow it.
      if (bits === 64) expect(fs.readFileSync(img).readBigUInt64BE(48)).not.toBe(tableAt);
    });
  }

  it('an internal snapshot keeps its data: shared clusters and L2 tables are copied before they change', async () => {
    const img = p('snap.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '4M');
    qemuIo(img, ['write -P 0x21 0 4M']);
    qemuImg('snapshot', '-c', 'before', img);
    const d = await open(img);
    const model = Buffer.alloc(d.length, 0x21);
    await exercise(d, model, { ops: 50, maxLen: 100_000, seed: 8, zeroes: true, clusterSize: 65536 });
    await expectClean(img, model, d);
    expect(qemuContent(img, 'before').equals(Buffer.alloc(4 << 20, 0x21))).toBe(true);
  });

  it('overwriting compressed clusters allocates new ones and releases the compressed data', async () => {
    const src = p('csrc.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', src, '2M');
    qemuIo(src, ['write -P 0x31 0 1M', 'write -P 0x32 1M 1M']);
    const img = p('compressed.qcow2');
    qemuImg('convert', '-q', '-c', '-O', 'qcow2', src, img);
    const d = await open(img);
    const model = Buffer.concat([Buffer.alloc(1 << 20, 0x31), Buffer.alloc(1 << 20, 0x32)]);
    await exercise(d, model, { ops: 40, maxLen: 100_000, seed: 9, zeroes: true, clusterSize: 65536 });
    await expectClean(img, model, d);
  });

  it('writeZeroes makes zero clusters and discard unallocates them in a v3 image without backing', async () => {
    const img = p('zero.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '2M');
    const d = await open(img);
    await d.write(0, Buffer.alloc(2 << 20, 0x77));
    await d.writeZeroes(65536, 3 * 65536);
    await d.discard(5 * 65536, 2 * 65536);
    await d.flush();
    const map = JSON.parse(qemuImg('map', '-U', '--output=json', img)) as { start: number; length: number; zero: boolean; data: boolean }[];
    const at = (o: number) => map.find((m) => m.start <= o && o < m.start + m.length)!;
    expect(at(65536)).toMatchObject({ zero: true, data: false });
    expect(at(5 * 65536)).toMatchObject({ zero: true, data: false });
    expect(at(0)).toMatchObject({ data: true });
    const model = Buffer.alloc(2 << 20, 0x77);
    model.fill(0, 65536, 4 * 65536);
    model.fill(0, 5 * 65536, 7 * 65536);
    await expectClean(img, model, d);
  });

  for (const backing of [false, true]) {
    it(`extended L2 (subclusters)${backing ? ' over a backing file' : ''}: only touched subclusters are allocated and copied`, async () => {
      const img = p(`extl2-${backing}.qcow2`);
      const model = Buffer.alloc(4 << 20);
      if (backing) {
        const base = p('extl2-base.qcow2');
        qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
        qemuIo(base, ['write -P 0x4b 0 4M']);
        model.fill(0x4b);
        qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', '-b', base, '-F', 'qcow2', img);
      } else qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', img, '4M');
      const d = await open(img);
      // One 4 KiB write in a fresh cluster allocates two of its 2 KiB subclusters.
      await d.write(65536 + 2048, pattern(4096, 1));
      pattern(4096, 1).copy(model, 65536 + 2048);
      await d.flush();
      const map = JSON.parse(qemuImg('map', '-U', '--output=json', img)) as { start: number; length: number; depth: number }[];
      const at = (o: number) => map.find((m) => m.start <= o && o < m.start + m.length)!;
      expect(at(65536 + 2048)).toMatchObject({ start: 65536 + 2048, length: 4096, depth: 0 });
      await exercise(d, model, { ops: 80, maxLen: 70_000, seed: backing ? 11 : 12, zeroes: true, clusterSize: 65536 });
      await expectClean(img, model, d);
    });
  }

  for (const raw of [false, true]) {
    it(`external data file${raw ? ' (data_file_raw)' : ''}: guest offsets map 1:1 into the data file`, async () => {
      const img = p(`df-${raw}.qcow2`);
      const dataFile = p(`df-${raw}.raw`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${dataFile}${raw ? ',data_file_raw=on' : ''}`, img, '4M');
      const d = await open(img);
      const model = Buffer.alloc(d.length);
      await exercise(d, model, { ops: 60, maxLen: 100_000, seed: raw ? 13 : 14, zeroes: true, clusterSize: 65536 });
      await expectClean(img, model, d);
      if (raw) {
        const bytes = fs.readFileSync(dataFile);
        expect(Buffer.concat([bytes, Buffer.alloc(Math.max(0, model.length - bytes.length))]).subarray(0, model.length).equals(model)).toBe(true);
      }
    });
  }

  for (const type of ['zlib', 'zstd']) {
    it(`writeCompressed (${type}): whole clusters packed into shared host clusters; incompressible ones written plain; allocated clusters refused`, async () => {
      const img = p(`wc-${type}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `compression_type=${type}`, img, '2M');
      const d = await open(img);
      const model = Buffer.alloc(d.length);
      const r = rng(15);
      const writes: Promise<void>[] = [];
      for (let c = 0; c < 24; c++) {
        const data = c === 7 ? Buffer.from(Array.from({ length: 65536 }, () => r(256))) : pattern(65536, c * 3);
        data.copy(model, c * 65536);
        writes.push(d.node.writeCompressed(c * 65536, data));
      }
      await Promise.all(writes);
      await expect(d.node.writeCompressed(0, Buffer.alloc(65536))).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(d.node.writeCompressed(100, Buffer.alloc(65536))).rejects.toMatchObject({ code: 'EINVAL' });
      // Overwriting compressed clusters releases their bytes.
      await d.write(65536 + 1000, Buffer.alloc(5000, 0xee));
      model.fill(0xee, 65536 + 1000, 65536 + 6000);
      await d.flush();
      const j = JSON.parse(spawnSync('qemu-img', ['check', '-U', '--output=json', img], { encoding: 'utf8' }).stdout) as Record<string, number>;
      expect(j['compressed-clusters']).toBe(22);
      // 22 compressible clusters share host clusters: far less than 22 clusters of file.
      expect(fs.statSync(img).size).toBeLessThan(10 * 65536);
      await expectClean(img, model, d);
    });
  }

  it('copies of the file taken at any moment while writes and evictions run have no corruption; a completed flush is in the copy', async () => {
    const img = p('crash.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', img, '8M');
    // Small caches: tables are written back (evicted) while the writes go on.
    const d = await open(img, { l2CacheSize: 8192, refcountCacheSize: 8192 });
    const model = Buffer.alloc(d.length);
    const r = rng(16);
    let copies = 0;
    for (let round = 0; round < 6; round++) {
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 40; i++) {
        const off = r(model.length - 20_000);
        const data = pattern(1 + r(20_000), round * 40 + i);
        data.copy(model, off);
        writes.push(d.write(off, data));
        if (i % 10 === 5) {
          // A "crash" now: what the OS has of the file is what a crash would leave.
          await new Promise((res) => setImmediate(res));
          fs.copyFileSync(img, p(`crash-${copies}.qcow2`));
          const c = check(p(`crash-${copies++}.qcow2`));
          expect(c.corruptions).toBe(0);
          expect(c.errors).toBe(0);
        }
      }
      await Promise.all(writes);
      await d.flush();
      fs.copyFileSync(img, p('flushed.qcow2'));
      expect(check(p('flushed.qcow2')).corruptions).toBe(0);
      expect(qemuContent(p('flushed.qcow2')).equals(model)).toBe(true);
    }
    await expectClean(img, model, d);
  });

  it('a failing data write (ENOSPC) rejects with that error and leaves no L2 entry to unwritten data, nor a leak', async () => {
    const img = p('enospc.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '4M');
    const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'blkdebug', file: { driver: 'file', filename: img } } });
    const injector = (d.node.child('file')!.info() as { injector: { add(r: object): void; clear(): void } }).injector;
    await d.write(0, Buffer.alloc(65536, 1));
    // The next data write past the current end of the file fails.
    injector.add({ event: 'write', code: 'ENOSPC', offset: fs.statSync(img).size + 70_000, once: false });
    const failed = await d.write(65536 + 4096, Buffer.alloc(200_000, 2)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(failed).toMatchObject({ code: 'ENOSPC' });
    injector.clear();
    const model = Buffer.alloc(d.length);
    model.fill(1, 0, 65536);
    // The clusters of the failed write read as before (zeros): none of them is mapped.
    expect(Buffer.from(await d.read(65536, 300_000)).equals(Buffer.alloc(300_000))).toBe(true);
    await d.write(2 << 20, Buffer.alloc(1000, 3));
    model.fill(3, 2 << 20, (2 << 20) + 1000);
    await expectClean(img, model, d);
  });

  it('lazy_refcounts: the dirty bit is on disk while the image is written and cleared by a clean close', async () => {
    const img = p('lazy.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', img, '4M');
    const dirtyBit = () => fs.readFileSync(img).readUInt32BE(76) & 1;
    const d = await open(img);
    expect(dirtyBit()).toBe(0);
    const model = Buffer.alloc(d.length);
    await exercise(d, model, { ops: 30, maxLen: 100_000, seed: 10, zeroes: true, clusterSize: 65536 });
    expect(dirtyBit()).toBe(1);
    await expectClean(img, model, d);
    expect(dirtyBit()).toBe(0);
  });

  it('images with persistent bitmaps open read-write (their bits are kept: qcow2-bitmaps.test.ts) and read-only', async () => {
    const img = p('bitmaps.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '1M');
    qemuImg('bitmap', '--add', img, 'b0');
    const rw = await open(img);
    await rw.write(0, Buffer.alloc(4096, 1));
    await rw.close();
    const ro = await open(img, { readOnly: true });
    expect(ro.dirtyBitmaps().map((b) => [b.name, b.count])).toEqual([['b0', 65536]]);
    await ro.close();
  });

  it('a dirty image (lazy refcounts, writer killed) is repaired on a read-write open, as QEMU does', async () => {
    const dirty = p('dirty.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', dirty, '4M');
    // qemu-io dies without closing: refcounts on disk lag behind the L2 tables
    spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x3c 0 1M', '-c', 'write -P 0x3d 2M 64k', '-c', 'sigraise 9', dirty]);
    const model = Buffer.alloc(4 << 20);
    model.fill(0x3c, 0, 1 << 20);
    model.fill(0x3d, 2 << 20, (2 << 20) + 65536);
    const ro = await open(dirty, { readOnly: true });
    expect(ro.node.info()).toMatchObject({ dirty: true });
    await ro.close();
    expect(check(dirty).corruptions + check(dirty).leaks).toBeGreaterThan(0);
    const d = await open(dirty);
    expect(d.node.info()).toMatchObject({ dirty: false });
    expect(Buffer.from(await d.read(0, d.length)).equals(model)).toBe(true);
    await d.write(3 << 20, Buffer.alloc(4096, 0x3e));
    model.fill(0x3e, 3 << 20, (3 << 20) + 4096);
    await d.close();
    await expectClean(dirty, model);
  });

  it('a read-only open and an open snapshot refuse writes with EROFS', async () => {
    const img = p('ro.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '1M');
    const d = await open(img, { readOnly: true });
    await expect(d.write(0, Buffer.alloc(512))).rejects.toMatchObject({ code: 'EROFS' });
    await d.close();
    qemuImg('snapshot', '-c', 's1', img);
    const s = await open(img, { snapshot: 's1' });
    await expect(s.write(0, Buffer.alloc(512))).rejects.toMatchObject({ code: 'EROFS' });
    await s.close();
  });
});
