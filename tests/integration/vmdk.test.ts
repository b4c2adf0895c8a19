import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Drive, vmdkDriver } from '../../src/index.js';
import { imageSuite } from '../helpers/image-suite.js';
import { haveQemuTools, ourMap, qemuImg, qemuIo, referenceMap } from '../helpers/qemu-images.js';
import { run } from '../helpers/tools.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('vmdk qemu-img comparisons skipped: install qemu-utils to run them');

const suite = imageSuite('blocklayer-vmdk-');
const { p, layer } = suite;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const openVmdk = (image: string, readOnly = true) => layer.openDrive({ driver: 'vmdk', readOnly, file: { driver: 'file', filename: image } });

/** qemu-img's virtual size of an image. */
function qemuSize(image: string): number {
  return (JSON.parse(qemuImg('info', '--output=json', '-U', image)) as { 'virtual-size': number })['virtual-size'];
}

/** Merged [start, end) ranges. */
function merge(ranges: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  for (const [s, e] of ranges.sort((x, y) => x[0] - y[0])) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/**
 * Compares a drive with a raw file byte by byte where either holds data: the raw file's data
 * (qemu-img map of the sparse file) and ours (our block status); elsewhere both claim zeros.
 * Images past 4 GiB are compared without reading gigabytes of holes.
 */
async function expectSameAsRaw(d: Drive, raw: string): Promise<void> {
  expect(d.length).toBe(fs.statSync(raw).size);
  const rawData = (JSON.parse(qemuImg('map', '--output=json', '-f', 'raw', raw)) as { start: number; length: number; data: boolean }[])
    .filter((e) => e.data)
    .map((e): [number, number] => [e.start, e.start + e.length]);
  const ourData = (await d.blockStatusMap()).filter((e) => e.data && !e.zero).map((e): [number, number] => [e.offset, e.offset + e.length]);
  const fd = fs.openSync(raw, 'r');
  try {
    const step = 4 * MiB;
    const want = Buffer.alloc(step);
    for (const [start, end] of merge([...rawData, ...ourData])) {
      for (let o = start; o < end; o += step) {
        const n = Math.min(step, end - o);
        fs.readSync(fd, want, 0, n, o);
        const got = await d.read(o, n);
        if (!Buffer.from(got.buffer, got.byteOffset, n).equals(want.subarray(0, n))) {
          const i = got.findIndex((b, k) => b !== want[k]);
          throw new Error(`content differs at byte ${o + i}: ours ${got[i]}, qemu-img ${want[i]}`);
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads `image` through our driver and compares content, size (and the map) with qemu-img's. */
async function compareWithQemu(image: string, opts: { map?: boolean | 'without offsets' } = {}): Promise<void> {
  const raw = `${image}.raw`;
  qemuImg('convert', '-U', '-f', 'vmdk', '-O', 'raw', image, raw);
  const d = await openVmdk(image);
  try {
    expect(d.length).toBe(qemuSize(image));
    await expectSameAsRaw(d, raw);
    if (opts.map === 'without offsets') {
      // Extents in several files: host offsets point into different files.
      const strip = (m: { offset?: number }[]) => m.map(({ offset: _o, ...e }) => e);
      expect(strip(await ourMap(d))).toEqual(strip(referenceMap(image)));
    } else if (opts.map) expect(await ourMap(d)).toEqual(referenceMap(image));
  } finally {
    await d.close();
    fs.rmSync(raw);
  }
}

/** Scattered data, odd sizes, holes, a write across a grain boundary and one past 4 GiB (when the disk reaches there). */
function scatteredWrites(size: number): string[] {
  const w = ['write -P 0xab 0 64k', 'write -P 0x11 100k 3k', 'write -P 0x22 1M 512k', 'write -P 0x33 2047k 1k', 'write -P 0x44 130560 1024'];
  if (size > 2 * GiB) w.push(`write -P 0x55 ${2 * GiB - 4096} 8k`);
  if (size > 4 * GiB) w.push(`write -P 0x66 ${4 * GiB + 12345 * 512} 70k`, `write -P 0x77 ${size - 512} 512`);
  return w;
}

describe.skipIf(!available)('vmdk images made by qemu-img read back byte-identical', () => {
  for (const [subformat, size] of [
    ['monolithicSparse', 3 * MiB + 512 * 5],
    ['monolithicSparse', 4 * GiB + 256 * MiB],
    ['monolithicFlat', 5 * MiB],
    ['twoGbMaxExtentSparse', 4 * GiB + 256 * MiB],
    ['twoGbMaxExtentFlat', 4 * GiB + 256 * MiB],
  ] as const) {
    it(`${subformat} of ${size} bytes`, async () => {
      const img = p(`${subformat}-${size}.vmdk`);
      qemuImg('create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, img, String(size));
      qemuIo(img, scatteredWrites(size), 'vmdk');
      await compareWithQemu(img, { map: subformat === 'monolithicSparse' ? true : 'without offsets' });
    }, 60_000);
  }

  it('monolithicSparse with zeroed grains (zeroed_grain=on, write -z)', async () => {
    const img = p('zeroed.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', img, '4M');
    qemuIo(img, ['write -P 0x12 0 256k', 'write -z 64k 128k', 'write -z 1M 64k'], 'vmdk');
    await compareWithQemu(img, { map: true });
  });

  it('streamOptimized made by qemu-img convert: compressed grains, odd tail', async () => {
    const raw = p('stream-src.raw');
    fs.writeFileSync(raw, Buffer.alloc(10 * MiB + 1536));
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 100k', '-c', 'write -P 0x22 5M 3k', '-c', `write -P 0x33 ${10 * MiB} 1536`, raw], { stdio: 'ignore' });
    // Incompressible data too.
    const fd = fs.openSync(raw, 'r+');
    fs.writeSync(fd, Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 7919 + (i >> 5) * 31) & 255)), 0, 200_000, 7 * MiB);
    fs.closeSync(fd);
    const img = p('stream.vmdk');
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, img);
    await compareWithQemu(img, { map: true });
    const d = await openVmdk(img);
    expect(d.node.info()).toMatchObject({ createType: 'streamOptimized' });
    await d.close();
  });
});

describe.skipIf(!available)('vmdk info, probing and parents against qemu-img', () => {
  it("info() has qemu-img info's format-specific data: cid, parent-cid, create-type, extents", async () => {
    const img = p('info-2gb.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', img, String(2 * GiB + 64 * MiB));
    const q = JSON.parse(qemuImg('info', '--output=json', img)) as {
      'format-specific': { data: { cid: number; 'parent-cid': number; 'create-type': string; extents: { 'virtual-size': number; filename: string; 'cluster-size'?: number; format: string }[] } };
    };
    const want = q['format-specific'].data;
    const d = await openVmdk(img);
    const info = d.node.info() as { cid: number; parentCid: number; createType: string; extents: { virtualSize: number; filename: string; clusterSize?: number; format: string }[] };
    expect(info.cid).toBe(want.cid);
    expect(info.parentCid).toBe(want['parent-cid']);
    expect(info.createType).toBe(want['create-type']);
    expect(info.extents.map((e) => [e.virtualSize, path.basename(e.filename), e.clusterSize, e.format])).toEqual(
      want.extents.map((e) => [e['virtual-size'], path.basename(e.filename), e['cluster-size'], e.format]),
    );
    await d.close();
  });

  for (const subformat of ['monolithicSparse', 'streamOptimized', 'twoGbMaxExtentFlat', 'twoGbMaxExtentSparse']) {
    it(`info().formatSpecific of ${subformat} is qemu-img info's "format-specific", key for key`, async () => {
      const img = p(`fs-${subformat}.vmdk`);
      qemuImg('create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, img, String(2 * GiB + 3 * MiB));
      const q = JSON.parse(qemuImg('info', '--output=json', img)) as { 'format-specific': unknown; 'cluster-size'?: number };
      const d = await openVmdk(img);
      const info = d.node.info() as { formatSpecific: unknown; clusterSize?: number };
      expect(JSON.stringify(info.formatSpecific)).toBe(JSON.stringify(q['format-specific']));
      expect(info.clusterSize).toBe(q['cluster-size']);
      await d.close();
    });
  }

  it("driver 'auto' probes a sparse file and a descriptor file as vmdk, and raw data as raw", async () => {
    const sparse = p('probe-sparse.vmdk');
    const flat = p('probe-flat.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', sparse, '1M');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', flat, '1M');
    for (const img of [sparse, flat]) {
      const n = await layer.openNode({ driver: 'auto', readOnly: true, file: { driver: 'file', filename: img } });
      expect(n.driver.name).toBe('vmdk');
      await n.unref();
    }
    // The flat extent's own bytes are raw data, not a descriptor.
    const n = await layer.openNode({ driver: 'auto', readOnly: true, file: { driver: 'file', filename: p('probe-flat-flat.vmdk') } });
    expect(n.driver.name).toBe('raw');
    await n.unref();
  });

  it('an image with a parent (parentFileNameHint) reads through to it, as qemu-img does', async () => {
    const base = p('base.vmdk');
    const top = p('top.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', base, '4M');
    qemuIo(base, ['write -P 0x01 0 1M', 'write -P 0x02 3M 1M'], 'vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', top);
    qemuIo(top, ['write -P 0x03 512k 1M', 'write -P 0x04 3M 4k'], 'vmdk');
    await compareWithQemu(top, { map: true });
    const d = await openVmdk(top);
    const info = d.node.info() as { backingFile: string; parentCid: number };
    expect(info.backingFile).toBe('base.vmdk');
    // Depth 1 where only the parent has data.
    const s = await d.node.blockStatus(3 * MiB + 64 * 1024, 4096);
    expect(s).toMatchObject({ depth: 1, data: true });
    await d.close();
  });

  it('a parent whose CID changed is refused on reads that reach it (QEMU: invalid parent CID)', async () => {
    const base = p('cid-base.vmdk');
    const top = p('cid-top.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', base, '1M');
    qemuImg('create', '-q', '-f', 'vmdk', '-b', 'cid-base.vmdk', '-F', 'vmdk', top);
    // The base changes its CID (as a write through another tool would), digits for digits.
    const text = fs.readFileSync(base);
    const at = text.indexOf('CID=') + 4;
    const old = /^[0-9a-f]+/.exec(text.toString('latin1', at, at + 8))![0];
    text.write(((Number.parseInt(old, 16) ^ 1) >>> 0).toString(16).padStart(old.length, '0'), at, 'latin1');
    fs.writeFileSync(base, text);
    const d = await openVmdk(top);
    await expect(d.read(0, 4096)).rejects.toMatchObject({ code: 'EINVAL' });
    await d.close();
  });
});

/** A seeded generator (xorshift32): the same writes on every run. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

/** Random writes through our driver into `image`, mirrored into a model; returns the model. */
async function randomWrites(image: string, model: Uint8Array, count: number, seed: number): Promise<void> {
  const d = await openVmdk(image, false);
  const rnd = prng(seed);
  try {
    for (let k = 0; k < count; k++) {
      const len = 1 + Math.floor(rnd() * 150_000);
      const off = Math.floor(rnd() * (model.length - len));
      const data = new Uint8Array(len).fill(1 + (k % 250));
      data[0] = k & 255;
      await d.write(off, data);
      model.set(data, off);
    }
    // Reads back through the same node before closing.
    expect(Buffer.from(await d.read(0, model.length)).equals(Buffer.from(model))).toBe(true);
  } finally {
    await d.close();
  }
}

/** Runs qemu-img check and compare (against the raw model) on an image we wrote. */
function judge(image: string, model: Uint8Array): void {
  const raw = `${image}.model`;
  fs.writeFileSync(raw, model);
  expect(qemuImg('check', '-f', 'vmdk', image)).toContain('No errors were found');
  expect(qemuImg('compare', '-f', 'vmdk', '-F', 'raw', image, raw)).toContain('Images are identical');
  fs.rmSync(raw);
}

/** Zeroes every grain directory entry (and the redundant ones): an image whose grain tables are yet to be made, as VMware leaves them. */
function dropGrainTables(image: string): void {
  const b = fs.readFileSync(image);
  const capacity = Number(b.readBigUInt64LE(12));
  const grain = Number(b.readBigUInt64LE(20));
  const gtes = b.readUInt32LE(44);
  const entries = Math.ceil(capacity / (grain * gtes));
  for (const field of [48, 56]) b.fill(0, Number(b.readBigUInt64LE(field)) * 512, Number(b.readBigUInt64LE(field)) * 512 + entries * 4);
  fs.writeFileSync(image, b);
}

describe.skipIf(!available)('writes through our vmdk driver are read by qemu-img', () => {
  for (const variant of ['monolithicSparse', 'zeroed_grain=on', 'no grain tables yet', 'monolithicFlat', 'twoGbMaxExtentFlat']) {
    it(`random writes to ${variant} match a model (qemu-img check, compare)`, async () => {
      const img = p(`w-${variant.replace(/\W/g, '')}.vmdk`);
      const o = variant.includes('=') ? variant : `subformat=${variant === 'no grain tables yet' ? 'monolithicSparse' : variant}`;
      qemuImg('create', '-q', '-f', 'vmdk', '-o', o, img, '9M');
      if (variant === 'no grain tables yet') dropGrainTables(img);
      const model = new Uint8Array(9 * MiB);
      await randomWrites(img, model, 60, variant.length);
      judge(img, model);
    }, 60_000);
  }

  it('writes across the 2 GiB extent boundary of twoGbMaxExtentSparse', async () => {
    const img = p('w-2gb.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', img, String(2 * GiB + 2 * MiB));
    const d = await openVmdk(img, false);
    const data = new Uint8Array(3 * MiB).map((_, i) => (i * 13) & 255);
    await d.write(2 * GiB - MiB - 1024, data);
    await d.close();
    expect(qemuImg('check', '-f', 'vmdk', img)).toContain('No errors were found');
    const out = p('w-2gb.raw');
    qemuImg('convert', '-f', 'vmdk', '-O', 'raw', img, out);
    const fd = fs.openSync(out, 'r');
    const got = Buffer.alloc(data.length);
    fs.readSync(fd, got, 0, data.length, 2 * GiB - MiB - 1024);
    fs.closeSync(fd);
    fs.rmSync(out);
    expect(got.equals(Buffer.from(data))).toBe(true);
  }, 60_000);

  it('a partial write to a new grain over a parent copies the rest of the grain from the parent', async () => {
    const base = p('wb-base.vmdk');
    const top = p('wb-top.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', base, '2M');
    qemuIo(base, ['write -P 0x5a 0 2M'], 'vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-b', 'wb-base.vmdk', '-F', 'vmdk', top);
    const model = new Uint8Array(2 * MiB).fill(0x5a);
    await randomWrites(top, model, 10, 7);
    judge(top, model);
  });

  it('concurrent writes into one new grain allocate it once', async () => {
    const img = p('w-conc.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', img, '1M');
    const before = fs.statSync(img).size;
    const d = await openVmdk(img, false);
    const model = new Uint8Array(MiB);
    await Promise.all(
      Array.from({ length: 16 }, (_, k) => {
        const data = new Uint8Array(4096).fill(k + 1);
        model.set(data, 64 * 1024 + k * 4096);
        return d.write(64 * 1024 + k * 4096, data);
      }),
    );
    await d.close();
    expect(fs.statSync(img).size).toBe(before + 64 * 1024);
    judge(img, model);
  });

  for (const zeroed of [true, false]) {
    it(`writeZeroes ${zeroed ? 'makes whole grains zeroed grains (zeroed_grain=on)' : 'writes zeros (no zeroed grains)'}, qemu-img agrees`, async () => {
      const img = p(`wz-${zeroed}.vmdk`);
      qemuImg('create', '-q', '-f', 'vmdk', ...(zeroed ? ['-o', 'zeroed_grain=on'] : []), img, '2M');
      qemuIo(img, ['write -P 0x99 0 2M'], 'vmdk');
      const before = fs.statSync(img).size;
      const d = await openVmdk(img, false);
      await d.writeZeroes(100_000, 600_000);
      await d.writeZeroes(1536 * 1024, 512 * 1024);
      await d.close();
      const model = new Uint8Array(2 * MiB).fill(0x99);
      model.fill(0, 100_000, 700_000);
      model.fill(0, 1536 * 1024);
      judge(img, model);
      expect(fs.statSync(img).size).toBe(before);
      const zeroGrains = referenceMap(img).filter((e) => e.zero && !e.data).reduce((n, e) => n + e.length, 0);
      // Grains 2..9 and 24..31 wholly inside the ranges (64 KiB grains).
      expect(zeroGrains).toBe(zeroed ? 16 * 64 * 1024 : 0);
    });
  }

  it('the first write gives the image a new CID: qemu-img sees it, and an overlay made before then no longer reads through', async () => {
    const base = p('cid-w-base.vmdk');
    const top = p('cid-w-top.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', base, '1M');
    qemuImg('create', '-q', '-f', 'vmdk', '-b', 'cid-w-base.vmdk', '-F', 'vmdk', top);
    const cidOf = (img: string) => (JSON.parse(qemuImg('info', '--output=json', img)) as { 'format-specific': { data: { cid: number } } })['format-specific'].data.cid;
    const before = cidOf(base);
    const d = await openVmdk(base, false);
    await d.write(0, new Uint8Array(512).fill(1));
    await d.write(4096, new Uint8Array(512).fill(2));
    const ours = (d.node.info() as { cid: number }).cid;
    await d.close();
    expect(ours).not.toBe(before);
    expect(cidOf(base)).toBe(ours);
    expect(qemuImg('check', '-f', 'vmdk', base)).toContain('No errors were found');
    const r = await run('qemu-io', ['-f', 'vmdk', '-c', 'read 0 512', top]);
    expect(`${r.stdout}${r.stderr}`).toMatch(/read failed: Invalid argument/);
  });

  it('parallel random writes (disjoint, many new grains at once) match a model', async () => {
    const img = p('w-parallel.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', img, '8M');
    const model = new Uint8Array(8 * MiB);
    const rnd = prng(4242);
    const d = await openVmdk(img, false);
    // 64 writes in 64 disjoint 128 KiB slots, each at a random place and length inside its slot.
    await Promise.all(
      Array.from({ length: 64 }, (_, k) => {
        const slot = k * 128 * 1024;
        const off = slot + Math.floor(rnd() * 64 * 1024);
        const data = new Uint8Array(1 + Math.floor(rnd() * 64 * 1024)).fill(k + 1);
        model.set(data, off);
        return d.write(off, data);
      }),
    );
    await d.close();
    judge(img, model);
  });

  it('version 3 sparse files open read-only only; RDONLY extents refuse writes', async () => {
    const v3 = p('w-v3.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', v3, '1M');
    patch(v3, 4, u32(3));
    await expect(openVmdk(v3, false)).rejects.toMatchObject({ code: 'EINVAL', field: 'version' });
    await (await openVmdk(v3, true)).close();
    const flat = p('w-rdonly.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', flat, '1M');
    fs.writeFileSync(flat, fs.readFileSync(flat, 'latin1').replace('RW 2048 FLAT', 'RDONLY 2048 FLAT'), 'latin1');
    const d = await openVmdk(flat, false);
    await expect(d.write(0, new Uint8Array(512))).rejects.toMatchObject({ code: 'EROFS' });
    await d.close();
  });

  it('streamOptimized takes whole new grains, compressed, as qemu-img convert writes them; no random writes (as QEMU)', async () => {
    const img = p('w-stream.vmdk');
    const size = 2 * MiB + 5 * 512;
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', img, String(size));
    const model = new Uint8Array(size);
    const rnd = prng(77);
    for (let o = 0; o < size; o++) model[o] = o < 300_000 ? (o * 31) & 255 : o > MiB && rnd() < 0.5 ? 1 + (o & 7) : 0;
    const d = await openVmdk(img, false);
    // Grain by grain in order, skipping zero grains (as convert does), the short last grain too.
    for (let o = 0; o < size; o += 64 * 1024) {
      const grain = model.subarray(o, Math.min(size, o + 64 * 1024));
      if (grain.some((b) => b !== 0)) await d.write(o, grain);
    }
    await expect(d.write(512, new Uint8Array(512))).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(d.write(0, model.subarray(0, 64 * 1024))).rejects.toMatchObject({ code: 'EIO' });
    expect(Buffer.from(await d.read(0, size)).equals(Buffer.from(model))).toBe(true);
    await d.close();
    judge(img, model);
    // The grains went in compressed: the file is far smaller than the data.
    expect(fs.statSync(img).size).toBeLessThan(MiB);
  });
});

/** Writes `bytes` at `offset` of a file. */
function patch(file: string, offset: number, bytes: Uint8Array): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, bytes, 0, bytes.length, offset);
  fs.closeSync(fd);
}
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};
const u64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
};
/** Sector offsets of an image's grain directory and first grain table (from its header). */
function tables(image: string): { gd: number; gt0: number } {
  const b = fs.readFileSync(image);
  const gd = Number(b.readBigUInt64LE(56)) * 512;
  return { gd, gt0: b.readUInt32LE(gd) * 512 };
}

/** Opens and reads all of an image: the promise must reject with `code` within a second. */
async function expectRefused(image: string, code: string, field?: RegExp): Promise<void> {
  const t0 = performance.now();
  const attempt = async () => {
    const d = await openVmdk(image);
    try {
      for (let o = 0; o < d.length; o += 4 * MiB) await d.read(o, Math.min(4 * MiB, d.length - o));
    } finally {
      await d.close();
    }
  };
  const e = (await attempt().then(
    () => undefined,
    (x: unknown) => x,
  )) as { name?: string; code?: string; message?: string } | undefined;
  expect(e, 'the image was accepted').toBeDefined();
  expect(e).toMatchObject({ name: 'BlockError', code });
  if (field) expect(e!.message).toMatch(field);
  expect(performance.now() - t0).toBeLessThan(1000);
}

/** A fresh image with data, made by qemu-img and qemu-io. */
function sparseImage(name: string, size = '4M', options = 'subformat=monolithicSparse'): string {
  const img = p(name);
  qemuImg('create', '-q', '-f', 'vmdk', '-o', options, img, size);
  qemuIo(img, ['write -P 0x42 0 128k'], 'vmdk');
  return img;
}

describe.skipIf(!available)('hostile vmdk images give a clear BlockError within a second', () => {
  it('a truncated file', async () => {
    const img = sparseImage('h-trunc.vmdk');
    fs.truncateSync(img, 4096);
    await expectRefused(img, 'ECORRUPT', /truncated|not inside the file|past the end/);
  });

  it('a grain directory entry past the end of the file', async () => {
    const img = sparseImage('h-gd-range.vmdk');
    patch(img, tables(img).gd, u32(0x00ffffff));
    await expectRefused(img, 'ECORRUPT', /past the end of the file/);
  });

  it('two grain directory entries naming one grain table (a loop of tables)', async () => {
    const img = sparseImage('h-gd-alias.vmdk', '64M');
    const { gd } = tables(img);
    patch(img, gd + 4, fs.readFileSync(img).subarray(gd, gd + 4));
    await expectRefused(img, 'ECORRUPT', /overlaps/);
  });

  it('a grain table placed on the grain directory itself', async () => {
    const img = sparseImage('h-gd-self.vmdk');
    const { gd } = tables(img);
    patch(img, gd, u32(gd / 512));
    await expectRefused(img, 'ECORRUPT', /overlaps/);
  });

  it('a grain table entry past the end of the file', async () => {
    const img = sparseImage('h-gt-range.vmdk');
    patch(img, tables(img).gt0 + 4, u32(0x7fffffff));
    await expectRefused(img, 'ECORRUPT', /grain table entry 1 .* past the end of the file/);
  });

  it('a grain table entry pointing into the metadata', async () => {
    const img = sparseImage('h-gt-meta.vmdk');
    patch(img, tables(img).gt0 + 4, u32(tables(img).gd / 512));
    await expectRefused(img, 'ECORRUPT', /inside the metadata/);
  });

  it('absurd capacities, grain sizes and table sizes', async () => {
    const cases: [number, Uint8Array, RegExp][] = [
      [12, u64(1n << 60n), /capacity/],
      [20, u64(0n), /grainSize|grain size is 0/],
      [20, u64(1n << 40n), /grainSize/],
      [44, u32(4096), /numGTEsPerGT/],
      [44, u32(0), /numGTEsPerGT/],
    ];
    for (const [i, [at, bytes, field]] of cases.entries()) {
      const img = sparseImage(`h-absurd-${i}.vmdk`, '1M');
      patch(img, at, bytes);
      await expectRefused(img, 'ECORRUPT', field);
    }
    // A capacity whose grain directory would need more than 32 Mi entries (1-sector grains, 1 entry per table).
    const img = sparseImage('h-absurd-gd.vmdk', '1M');
    patch(img, 12, u64(1n << 40n));
    patch(img, 20, u64(1n));
    patch(img, 44, u32(1));
    await expectRefused(img, 'ECORRUPT', /grain directory entries/);
    const v4 = sparseImage('h-v4.vmdk', '1M');
    patch(v4, 4, u32(4));
    await expectRefused(v4, 'ENOTSUP', /version/);
  });

  it('compressed grains that inflate past their size, or claim absurd sizes, or are garbage', async () => {
    const raw = p('h-stream.raw');
    fs.writeFileSync(raw, Buffer.alloc(MiB, 0x61));
    const zlib = await import('node:zlib');
    const cases: [string, (img: string, host: number) => void][] = [
      ['too big', (img, host) => {
        const z = zlib.deflateSync(Buffer.alloc(2 * 64 * 1024));
        patch(img, host + 8, u32(z.length));
        patch(img, host + 12, z);
      }],
      ['absurd size', (img, host) => patch(img, host + 8, u32(0xffffffff))],
      ['garbage', (img, host) => patch(img, host + 12, Buffer.alloc(64, 0xee))],
    ];
    for (const [name, spoil] of cases) {
      const img = p(`h-stream-${name.replace(/\W/g, '')}.vmdk`);
      qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, img);
      const { gt0 } = tables(img);
      spoil(img, fs.readFileSync(img).readUInt32LE(gt0) * 512);
      await expectRefused(img, 'ECORRUPT', /compressed grain/);
    }
  });

  it('a header that puts the grain directory in a footer that is not there', async () => {
    const img = sparseImage('h-footer.vmdk', '1M', 'subformat=streamOptimized');
    patch(img, 56, u64(0xffffffffffffffffn));
    await expectRefused(img, 'ECORRUPT', /footer/);
  });

  it('descriptors: a missing extent file, an unknown extent type, no createType, absurd sizes, too many extents', async () => {
    const head = '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n';
    const cases: [string, string, RegExp][] = [
      [`${head}createType="monolithicFlat"\nRW 2048 FLAT "nowhere-flat.vmdk" 0\n`, 'ENOENT', /nowhere/],
      [`${head}createType="monolithicFlat"\nRW 2048 VMFSSPARSE "x.vmdk"\n`, 'ENOTSUP', /extent type/],
      [`${head}createType="vmfsSparse"\nRW 2048 VMFSSPARSE "x.vmdk"\n`, 'ENOTSUP', /extent type/],
      [`${head}RW 2048 FLAT "x.vmdk" 0\n`, 'ECORRUPT', /createType/],
      [`${head}createType="monolithicFlat"\nRW 99999999999999999999 FLAT "x.vmdk" 0\n`, 'ECORRUPT', /too large/],
      [`${head}createType="monolithicFlat"\n${'RW 1 FLAT "x.vmdk" 0\n'.repeat(2000)}`, 'ECORRUPT', /extents/],
      [`${head}createType="monolithicSparse"\nRW 2048 SPARSE "x.vmdk"\n`, 'ENOTSUP', /image type/],
    ];
    for (const [i, [text, code, field]] of cases.entries()) {
      const img = p(`h-desc-${i}.vmdk`);
      fs.writeFileSync(img, text);
      await expectRefused(img, code, field);
    }
  });

  it('a parent chain that loops back to the image', async () => {
    const a = p('loopa.vmdk');
    const b = p('loopb.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', b, '1M');
    qemuImg('create', '-q', '-f', 'vmdk', '-b', 'loopb.vmdk', '-F', 'vmdk', a);
    // b names a as its parent: rewrite b's embedded descriptor (20 sectors at sector 1).
    const text = Buffer.from(fs.readFileSync(b).subarray(512, 512 * 21)).toString('latin1').replace(/\0+$/, '');
    const looped = text.replace('createType=', 'parentFileNameHint="loopa.vmdk"\ncreateType=');
    const area = Buffer.alloc(20 * 512);
    area.write(looped, 'latin1');
    patch(b, 512, area);
    await expectRefused(a, 'ECORRUPT', /loops/);
  });
});

describe.skipIf(!available)("VMware's stream layout: the grain directory named in a footer (GD_AT_END)", () => {
  it('reads as qemu-img reads it', async () => {
    const raw = p('vmw.raw');
    fs.writeFileSync(raw, Buffer.alloc(3 * MiB + 4096));
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x71 4k 300k', '-c', 'write -P 0x72 2M 64k', raw], { stdio: 'ignore' });
    const img = p('vmw.vmdk');
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, img);
    // Move the header's grain directory offset into a footer, as VMware writes streams.
    const b = fs.readFileSync(img);
    const header = Buffer.from(b.subarray(0, 512));
    const footerMarker = Buffer.alloc(512);
    footerMarker.writeBigUInt64LE(1n, 0);
    footerMarker.writeUInt32LE(3, 12);
    const stream = Buffer.concat([b, footerMarker, header, Buffer.alloc(512)]);
    stream.writeBigUInt64LE(0xffffffffffffffffn, 56);
    fs.writeFileSync(img, stream);
    await compareWithQemu(img, { map: true });
  });
});

/** Creates an image with our creator on a new, empty file (as `blocklayer create -f vmdk` will). */
async function ourCreate(image: string, size: number, options: Record<string, unknown>, backing?: { name: string; format: string; size: number }): Promise<number> {
  fs.writeFileSync(image, '');
  const node = await layer.openNode({ driver: 'file', filename: image });
  try {
    return await vmdkDriver.create!.create(node, size, options, backing);
  } finally {
    await node.unref();
  }
}

/** An image's bytes with its CID blanked (a random number in each image, of 1 to 8 hex digits): the embedded descriptor as text. */
function withoutCid(image: string): string {
  const b = fs.readFileSync(image);
  const descriptor = b.toString('latin1', 512, 512 * 21).replace(/\0+$/, '').replace(/\nCID=[0-9a-f]+\n/, '\nCID=x\n');
  return `${b.toString('latin1', 0, 512)}${descriptor}|${b.toString('latin1', 512 * 21)}`;
}

describe.skipIf(!available)('images we create are the ones qemu-img creates', () => {
  const cases: Record<string, unknown>[] = [
    {},
    { subformat: 'streamOptimized' },
    { zeroed_grain: 'on' },
    { adapter_type: 'lsilogic', hwversion: '7', toolsversion: '1234' },
    { adapter_type: 'buslogic', compat6: true },
    { adapter_type: 'legacyESX' },
  ];
  for (const o of cases) {
    const opts = Object.entries(o).map(([k, v]) => `${k}=${v === true ? 'on' : v}`);
    it(`-o ${opts.join(',') || '(defaults)'}: byte for byte (but the CID), qemu-img check clean`, async () => {
      const name = `c-${opts.join('-').replace(/\W/g, '') || 'default'}`;
      fs.mkdirSync(p(`${name}-q`));
      fs.mkdirSync(p(`${name}-o`));
      const theirs = p(`${name}-q/x.vmdk`);
      const ours = p(`${name}-o/x.vmdk`);
      qemuImg('create', '-q', '-f', 'vmdk', ...(opts.length ? ['-o', opts.join(',')] : []), theirs, String(3 * GiB + 5000));
      expect(await ourCreate(ours, 3 * GiB + 5000, o)).toBe(qemuSize(theirs));
      expect(withoutCid(ours) === withoutCid(theirs), 'the files differ').toBe(true);
      expect(qemuImg('check', '-f', 'vmdk', ours)).toContain('No errors were found');
    });
  }

  it('an image we create takes writes through our driver and qemu-img reads them', async () => {
    const img = p('c-written.vmdk');
    await ourCreate(img, 5 * MiB, {});
    const model = new Uint8Array(5 * MiB);
    await randomWrites(img, model, 20, 99);
    judge(img, model);
  });

  it('an image with a parent: parentFileNameHint and the parent CID, read through by qemu-img', async () => {
    const base = p('c-base.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', base, '2M');
    qemuIo(base, ['write -P 0x3c 0 2M'], 'vmdk');
    const top = p('c-top.vmdk');
    await ourCreate(top, 2 * MiB, {}, { name: 'c-base.vmdk', format: 'vmdk', size: 2 * MiB });
    const info = JSON.parse(qemuImg('info', '--output=json', top)) as { 'backing-filename': string };
    expect(info['backing-filename']).toBe('c-base.vmdk');
    // qemu-io refuses reads through a parent whose CID is not the recorded one.
    expect(qemuImg('compare', top, base)).toContain('Images are identical');
  });

  it('refuses unknown options, compat6 with hwversion, a non-vmdk parent, and the multi-file subformats', async () => {
    const img = p('c-bad.vmdk');
    await expect(ourCreate(img, MiB, { cluster_size: 65536 })).rejects.toMatchObject({ code: 'EINVAL', field: 'cluster_size' });
    await expect(ourCreate(img, MiB, { compat6: 'on', hwversion: '7' })).rejects.toMatchObject({ code: 'EINVAL', field: 'compat6' });
    await expect(ourCreate(img, MiB, { adapter_type: 'scsi' })).rejects.toMatchObject({ code: 'EINVAL', field: 'adapter_type' });
    await expect(ourCreate(img, MiB, {}, { name: 'x.qcow2', format: 'qcow2', size: MiB })).rejects.toMatchObject({ code: 'EINVAL', field: 'backing_fmt' });
    await expect(ourCreate(img, MiB, { subformat: 'twoGbMaxExtentFlat' })).rejects.toMatchObject({ code: 'ENOTSUP', field: 'subformat' });
  });
});
