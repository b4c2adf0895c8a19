import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive } from '../../src/index.js';
import { haveQemuTools, ourMap, qemuImg, qemuIo, referenceMap, setQemuCwd } from '../helpers/qemu-images.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('vmdk qemu-img comparisons skipped: install qemu-utils to run them');

let dir: string;
const p = (name: string) => path.join(dir, name);
const layer = new BlockLayer();
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-vmdk-'));
  setQemuCwd(dir);
});
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

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
async function compareWithQemu(image: string, opts: { map?: boolean } = {}): Promise<void> {
  const raw = `${image}.raw`;
  qemuImg('convert', '-U', '-f', 'vmdk', '-O', 'raw', image, raw);
  const d = await openVmdk(image);
  try {
    expect(d.length).toBe(qemuSize(image));
    await expectSameAsRaw(d, raw);
    if (opts.map) expect(await ourMap(d)).toEqual(referenceMap(image));
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
      await compareWithQemu(img, { map: subformat === 'monolithicSparse' });
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
    await compareWithQemu(img);
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
    await compareWithQemu(top, { map: false });
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

  it('streamOptimized takes no random writes (as QEMU)', async () => {
    const img = p('w-stream.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', img, '1M');
    const d = await openVmdk(img, false);
    await expect(d.write(0, new Uint8Array(512))).rejects.toMatchObject({ code: 'ENOTSUP' });
    await d.close();
  });
});
