// The vpc (VHD) driver against qemu-img and qemu-io: images they make read byte-identical to
// qemu-img convert, images we write and create compare equal under qemu-img compare, and
// differencing chains (built by tests/helpers/vhd-differencing.ts: no tool here makes them) read as their model.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { vpcDriver } from '../../src/drivers/index.js';
import { BlockError } from '../../src/index.js';
import { imageSuite } from '../helpers/image-suite.js';
import { haveQemuTools, qemuImg, qemuIo } from '../helpers/qemu-images.js';
import { rejection } from '../helpers/rejection.js';
import { writeDifferencingVhd } from '../helpers/vhd-differencing.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('vpc tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const suite = imageSuite('blocklayer-vpc-');
const { p, layer } = suite;

const openVpc = (image: string, extra: Record<string, unknown> = {}) => layer.openNode({ driver: 'vpc', file: { driver: 'file', filename: image }, ...extra });

/** qemu-img's view of an image (always -f vpc: a fixed VHD is not probed, as its footer is at the end). */
const qemuInfo = (image: string) => JSON.parse(qemuImg('info', '-U', '-f', 'vpc', '--output=json', image)) as { 'virtual-size': number; format: string };

/** The raw content qemu-img convert makes of an image. */
function qemuRaw(image: string): Buffer {
  const out = p('convert.raw');
  qemuImg('convert', '-U', '-f', 'vpc', '-O', 'raw', image, out);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

/** qemu-img compare of an image against a raw file: exit status 0 when identical. */
function qemuCompare(image: string, raw: string): { code: number | null; out: string } {
  const r = spawnSync('qemu-img', ['compare', '-U', '-f', 'vpc', '-F', 'raw', image, raw], { encoding: 'utf8', cwd: suite.dir });
  return { code: r.status, out: r.stdout + r.stderr };
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

async function readAll(node: { length: number; read(o: number, b: Uint8Array): Promise<void> }): Promise<Buffer> {
  const b = Buffer.alloc(node.length);
  for (let o = 0; o < b.length; o += 1 << 20) await node.read(o, b.subarray(o, Math.min(b.length, o + (1 << 20))));
  return b;
}

const WRITES = ['write -P 0x11 0 512', 'write -P 0x22 4095k 3k', 'write -P 0x33 2047k 2k', 'write -P 0x44 9m 1536', 'write -P 0x55 11263k 1k'];

describe.skipIf(!available)('vpc: images qemu-img makes', () => {
  const kinds = [
    { name: 'dynamic', opts: 'subformat=dynamic', size: '11M' },
    { name: 'dynamic, odd size', opts: 'subformat=dynamic', size: String(11 * 1024 * 1024 + 3 * 512 + 7) },
    { name: 'dynamic force_size', opts: 'subformat=dynamic,force_size=on', size: '11M' },
    { name: 'fixed', opts: 'subformat=fixed', size: '11M' },
    { name: 'fixed force_size, odd size', opts: 'subformat=fixed,force_size=on', size: String(11 * 1024 * 1024 + 5 * 512) },
  ];
  for (const k of kinds) {
    it(`${k.name}: reads as qemu-img convert does, with qemu-img's virtual size`, async () => {
      const image = p(`read-${k.name.replace(/\W+/g, '-')}.vhd`);
      qemuImg('create', '-q', '-f', 'vpc', '-o', k.opts, image, k.size);
      qemuIo(image, WRITES, 'vpc');
      const node = await openVpc(image, { readOnly: true });
      try {
        expect(node.length).toBe(qemuInfo(image)['virtual-size']);
        expect((await readAll(node)).equals(qemuRaw(image))).toBe(true);
        expect(node.info()).toMatchObject({ format: 'vpc', subformat: k.opts.includes('fixed') ? 'fixed' : 'dynamic' });
        // qemu-img info's one vpc-specific fact: the block size of a dynamic image as its cluster size
        expect(node.info().clusterSize).toBe((qemuInfo(image) as { 'cluster-size'?: number })['cluster-size']);
      } finally {
        await node.unref();
      }
    });
  }

  it.each(['dynamic', 'fixed'])('%s, data past 4 GiB: the written ranges and holes read as qemu-img reads them; block status shows the data', async (subformat) => {
    const image = p(`big-${subformat}.vhd`);
    qemuImg('create', '-q', '-f', 'vpc', '-o', `subformat=${subformat}`, image, '6G');
    const at = [4 * 2 ** 30 + 12345 * 512, 5 * 2 ** 30 + 3 * 2 ** 20, 2 ** 32 - 1024];
    qemuIo(image, [`write -P 0x5a ${at[0]} 70k`, `write -P 0xa5 ${at[1]} 1m`, `write -P 0x3c ${at[2]} 4k`], 'vpc');
    const raw = p(`big-${subformat}.raw`);
    qemuImg('convert', '-f', 'vpc', '-O', 'raw', image, raw);
    const node = await openVpc(image, { readOnly: true });
    const fd = fs.openSync(raw, 'r');
    try {
      expect(node.length).toBe(qemuInfo(image)['virtual-size']);
      for (const o of [...at, 3 * 2 ** 30]) {
        const start = o - 64 * 1024;
        const ours = Buffer.alloc(2 * 2 ** 20);
        await node.read(start, ours);
        const theirs = Buffer.alloc(ours.length);
        fs.readSync(fd, theirs, 0, theirs.length, start);
        expect(ours.equals(theirs)).toBe(true);
      }
      const map = await node.blockStatusMap();
      const dataAt = (o: number) => map.find((e) => e.offset <= o && o < e.offset + e.length)!.data;
      expect(at.every(dataAt)).toBe(true);
      expect(dataAt(3 * 2 ** 30)).toBe(false);
    } finally {
      fs.closeSync(fd);
      fs.rmSync(raw);
      await node.unref();
    }
  });
});

describe.skipIf(!available)('vpc: writes through our driver', () => {
  for (const subformat of ['dynamic', 'fixed'] as const) {
    it(`${subformat}: random writes and zeroes match a model; qemu-img compare agrees`, async () => {
      const image = p(`write-${subformat}.vhd`);
      qemuImg('create', '-q', '-f', 'vpc', '-o', `subformat=${subformat}`, image, '9M');
      qemuIo(image, ['write -P 0x77 3m 64k'], 'vpc');
      const node = await openVpc(image);
      const model = await readAll(node);
      const r = rng(subformat === 'fixed' ? 7 : 3);
      for (let i = 0; i < 120; i++) {
        const off = r(model.length);
        const len = Math.min(1 + r(300_000), model.length - off);
        if (i % 9 === 8) {
          await node.writeZeroes(off, len);
          model.fill(0, off, off + len);
        } else {
          const data = Buffer.alloc(len, (i * 7 + 1) & 0xff);
          data.writeUInt32LE(i, 0);
          await node.write(off, data);
          data.copy(model, off);
        }
      }
      expect((await readAll(node)).equals(model)).toBe(true);
      await node.unref();
      const raw = p(`write-${subformat}.raw`);
      fs.writeFileSync(raw, model);
      const c = qemuCompare(image, raw);
      expect(c.out).toContain('Images are identical');
      expect(c.code).toBe(0);
      expect(qemuInfo(image)['virtual-size']).toBe(model.length);
    });
  }

  it('through a Drive: writes and reads back, and qemu-img compare agrees after close', async () => {
    const image = p('drive.vhd');
    qemuImg('create', '-q', '-f', 'vpc', image, '6M');
    const drive = await layer.openDrive({ driver: 'vpc', file: { driver: 'file', filename: image } });
    const model = Buffer.alloc(drive.length);
    const data = Buffer.alloc(300_001, 0x5e);
    await drive.write(1_000_003, data);
    data.copy(model, 1_000_003);
    expect(Buffer.from(await drive.read(999_000, 302_000)).equals(model.subarray(999_000, 1_301_000))).toBe(true);
    await drive.close();
    const raw = p('drive.raw');
    fs.writeFileSync(raw, model);
    expect(qemuCompare(image, raw).code).toBe(0);
  });

  it('concurrent writes to one unallocated block allocate it once', async () => {
    const image = p('concurrent.vhd');
    qemuImg('create', '-q', '-f', 'vpc', image, '8M');
    const node = await openVpc(image);
    const before = fs.statSync(image).size;
    const model = Buffer.alloc(node.length);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 32; i++) {
      const off = 2 * 2 ** 20 + i * 8192;
      const data = Buffer.alloc(4096, i + 1);
      data.copy(model, off);
      writes.push(node.write(off, data));
    }
    await Promise.all(writes);
    expect(node.info().allocatedBlocks).toBe(1);
    await node.unref();
    // one block: its bitmap sector, 2 MiB of data
    expect(fs.statSync(image).size).toBe(before + 512 + 2 * 2 ** 20);
    const raw = p('concurrent.raw');
    fs.writeFileSync(raw, model);
    expect(qemuCompare(image, raw).code).toBe(0);
  });
});

describe.skipIf(!available)('vpc: create', () => {
  async function create(name: string, size: number, options: Record<string, unknown>): Promise<{ image: string; size: number }> {
    const image = p(name);
    fs.writeFileSync(image, '');
    const file = await layer.openNode({ driver: 'file', filename: image });
    try {
      return { image, size: await vpcDriver.create!.create(file, size, options) };
    } finally {
      await file.unref();
    }
  }

  for (const [subformat, force] of [
    ['dynamic', false],
    ['fixed', false],
    ['dynamic', true],
    ['fixed', true],
  ] as const) {
    it(`${subformat}${force ? ', force_size' : ''}: qemu-img reads it with the size qemu-img create gives; qemu-io writes read back through us`, async () => {
      const name = `create-${subformat}-${force}.vhd`;
      const size = 11 * 1024 * 1024 + 3 * 512;
      const made = await create(name, size, { subformat, force_size: force ? 'on' : 'off' });
      const theirs = p(`their-${name}`);
      qemuImg('create', '-q', '-f', 'vpc', '-o', `subformat=${subformat},force_size=${force ? 'on' : 'off'}`, theirs, String(size));
      expect(made.size).toBe(qemuInfo(theirs)['virtual-size']);
      expect(qemuInfo(made.image)).toMatchObject({ format: 'vpc', 'virtual-size': made.size });
      expect(fs.statSync(made.image).size).toBe(fs.statSync(theirs).size);
      qemuIo(made.image, WRITES, 'vpc');
      const node = await openVpc(made.image, { readOnly: true });
      try {
        expect((await readAll(node)).equals(qemuRaw(made.image))).toBe(true);
      } finally {
        await node.unref();
      }
    });
  }

  it('Azure: fixed with force_size=on of 1 GiB is a file of 1 GiB + 512 that qemu-img reports as 1 GiB', async () => {
    const made = await create('azure.vhd', 2 ** 30, { subformat: 'fixed', force_size: true });
    expect(made.size).toBe(2 ** 30);
    expect(fs.statSync(made.image).size).toBe(2 ** 30 + 512);
    expect(qemuInfo(made.image)['virtual-size']).toBe(2 ** 30);
  });

  it('refuses an unknown option naming it, and a backing file', async () => {
    const e = (await rejection(create('bad.vhd', 2 ** 20, { subformat: 'dynamic', block_size: 4096 }))) as BlockError;
    expect(e).toBeInstanceOf(BlockError);
    expect(e.code).toBe('EINVAL');
    expect(e.message).toContain('block_size');
    const file = await layer.openNode({ driver: 'file', filename: p('bad.vhd') });
    const b = (await rejection(vpcDriver.create!.create(file, 2 ** 20, {}, { name: 'x.vhd', format: 'vpc', size: 2 ** 20 }))) as BlockError;
    expect(b.code).toBe('ENOTSUP');
    await file.unref();
  });
});

describe.skipIf(!available)('vpc: differencing images (built from the VHD specification: qemu-img cannot make them)', () => {
  const BLOCK = 64 * 1024;
  let parent: string;
  let parentRaw: Buffer;

  /** Child sectors spread over blocks the parent has and has not, some whole runs, some single sectors. */
  function childSectors(seed: number, size: number): Map<number, Uint8Array> {
    const r = rng(seed);
    const m = new Map<number, Uint8Array>();
    for (let i = 0; i < 60; i++) {
      const first = r(size / 512);
      const run = 1 + r(40);
      for (let s = first; s < Math.min(first + run, size / 512); s++) m.set(s, Buffer.alloc(512, (seed * 31 + i) & 0xff || 1));
    }
    return m;
  }

  function overlay(base: Buffer, sectors: Map<number, Uint8Array>): Buffer {
    const out = Buffer.from(base);
    for (const [s, b] of sectors) out.set(b, s * 512);
    return out;
  }

  beforeAll(() => {
    parent = p('parent.vhd');
    qemuImg('create', '-q', '-f', 'vpc', parent, '8M');
    qemuIo(parent, ['write -P 0x61 0 100k', 'write -P 0x62 3m 1m', 'write -P 0x63 7m 200k'], 'vpc');
    parentRaw = qemuRaw(parent);
  });

  it('a relative W2ru locator (Windows separators) finds the parent; unset sectors read from it; block status tells the layers apart', async () => {
    const sectors = childSectors(1, parentRaw.length);
    const child = p('child-w2ru.vhd');
    writeDifferencingVhd(child, { parent, size: parentRaw.length, blockSize: BLOCK, sectors, locators: [{ platform: 'W2ru', path: '.\\parent.vhd' }] });
    const node = await openVpc(child, { readOnly: true });
    try {
      expect(node.length).toBe(parentRaw.length);
      expect((await readAll(node)).equals(overlay(parentRaw, sectors))).toBe(true);
      expect(node.info()).toMatchObject({ subformat: 'differencing', backingFile: parent });
      const [first] = sectors.keys();
      const own = await node.blockStatus(first * 512, 512);
      expect(own).toMatchObject({ allocated: true, data: true, depth: 0 });
      const fromParent = await node.blockStatus(3 * 2 ** 20 + 512 * 100, 512);
      if (!sectors.has(3 * 2048 + 100)) expect(fromParent).toMatchObject({ data: true, depth: 1 });
    } finally {
      await node.unref();
    }
  });

  it('a Windows absolute W2ku path cannot name a file here: the parent unicode name beside the image does; MacX file URLs work', async () => {
    const sectors = childSectors(2, parentRaw.length);
    const model = overlay(parentRaw, sectors);
    const a = p('child-w2ku.vhd');
    writeDifferencingVhd(a, { parent, size: parentRaw.length, sectors, locators: [{ platform: 'W2ku', path: 'C:\\VMs\\parent.vhd' }], parentName: 'C:\\VMs\\parent.vhd' });
    const b = p('child-macx.vhd');
    writeDifferencingVhd(b, { parent, size: parentRaw.length, sectors, locators: [{ platform: 'MacX', path: `file://localhost${parent}` }] });
    const c = p('child-abs.vhd');
    writeDifferencingVhd(c, { parent, size: parentRaw.length, sectors, locators: [{ platform: 'W2ku', path: parent }] });
    for (const image of [a, b, c]) {
      const node = await openVpc(image, { readOnly: true });
      try {
        expect((await readAll(node)).equals(model)).toBe(true);
      } finally {
        await node.unref();
      }
    }
  });

  it('a chain of two differencing images over a dynamic parent; writes land in the top image only', async () => {
    const midSectors = childSectors(3, parentRaw.length);
    const mid = p('mid.vhd');
    writeDifferencingVhd(mid, { parent, size: parentRaw.length, blockSize: BLOCK, sectors: midSectors, locators: [{ platform: 'W2ru', path: 'parent.vhd' }] });
    const topSectors = childSectors(4, parentRaw.length);
    const top = p('top.vhd');
    writeDifferencingVhd(top, { parent: mid, size: parentRaw.length, sectors: topSectors, locators: [{ platform: 'W2ru', path: '.\\mid.vhd' }] });
    const model = overlay(overlay(parentRaw, midSectors), topSectors);
    const midBytes = fs.readFileSync(mid);
    const node = await openVpc(top);
    try {
      expect((await readAll(node)).equals(model)).toBe(true);
      const r = rng(5);
      for (let i = 0; i < 60; i++) {
        const off = r(model.length / 512) * 512;
        const len = Math.min((1 + r(300)) * 512, model.length - off);
        const data = Buffer.alloc(len, (i + 9) & 0xff);
        await node.write(off, data);
        data.copy(model, off);
      }
      expect((await readAll(node)).equals(model)).toBe(true);
    } finally {
      await node.unref();
    }
    expect(fs.readFileSync(mid).equals(midBytes)).toBe(true);
    const again = await openVpc(top, { readOnly: true });
    try {
      expect((await readAll(again)).equals(model)).toBe(true);
      expect(qemuInfo(parent)['virtual-size']).toBe(parentRaw.length);
    } finally {
      await again.unref();
    }
  });

  it('an empty differencing image takes writes without overwriting its locators: it finds its parent again', async () => {
    const child = p('child-empty.vhd');
    writeDifferencingVhd(child, { parent, size: parentRaw.length, sectors: new Map(), locators: [{ platform: 'W2ru', path: '.\\parent.vhd' }] });
    const model = Buffer.from(parentRaw);
    const node = await openVpc(child);
    const data = Buffer.alloc(3 * 512, 0xee);
    await node.write(2 ** 20 + 1024, data);
    data.copy(model, 2 ** 20 + 1024);
    await node.unref();
    const again = await openVpc(child, { readOnly: true });
    try {
      expect((await readAll(again)).equals(model)).toBe(true);
    } finally {
      await again.unref();
    }
  });

  it('refuses a chain deeper than 64 differencing images (ENOTSUP), within a second', async () => {
    let below = parent;
    for (let i = 0; i < 66; i++) {
      const image = p(`deep-${i}.vhd`);
      writeDifferencingVhd(image, { parent: below, size: parentRaw.length, sectors: new Map(), locators: [{ platform: 'W2ru', path: path.basename(below) }] });
      below = image;
    }
    const t = Date.now();
    const e = (await rejection(openVpc(below, { readOnly: true }))) as BlockError;
    expect(Date.now() - t).toBeLessThan(1000);
    expect({ code: e.code, field: e.field }).toEqual({ code: 'ENOTSUP', field: 'parent_locator' });
    const ok = await openVpc(p('deep-40.vhd'), { readOnly: true });
    try {
      expect((await readAll(ok)).equals(parentRaw)).toBe(true);
    } finally {
      await ok.unref();
    }
  });

  it('zeroes written with backing: null hide the parent once it is open again', async () => {
    const child = p('child-zero.vhd');
    writeDifferencingVhd(child, { parent, size: parentRaw.length, sectors: new Map(), locators: [{ platform: 'W2ru', path: 'parent.vhd' }] });
    const alone = await openVpc(child, { backing: null });
    await alone.writeZeroes(3 * 2 ** 20, 2 ** 20);
    await alone.unref();
    const model = Buffer.from(parentRaw);
    model.fill(0, 3 * 2 ** 20, 4 * 2 ** 20);
    const node = await openVpc(child, { readOnly: true });
    try {
      expect((await readAll(node)).equals(model)).toBe(true);
    } finally {
      await node.unref();
    }
  });

  it('backing: null reads the sectors not in the image as zeros', async () => {
    const sectors = childSectors(6, parentRaw.length);
    const child = p('child-null.vhd');
    writeDifferencingVhd(child, { parent, size: parentRaw.length, sectors, locators: [{ platform: 'W2ru', path: 'parent.vhd' }] });
    const node = await openVpc(child, { readOnly: true, backing: null });
    try {
      expect((await readAll(node)).equals(overlay(Buffer.alloc(parentRaw.length), sectors))).toBe(true);
    } finally {
      await node.unref();
    }
  });

  it('refuses a missing parent (ENOENT), a chain that loops (ECORRUPT) and a parent of another UUID (ECORRUPT), each within a second', async () => {
    const none = p('child-missing.vhd');
    writeDifferencingVhd(none, { parent, size: parentRaw.length, sectors: new Map(), locators: [{ platform: 'W2ru', path: 'nowhere.vhd' }] });
    const loop = p('child-loop.vhd');
    writeDifferencingVhd(loop, { parent, size: parentRaw.length, sectors: new Map(), locators: [{ platform: 'W2ru', path: 'child-loop.vhd' }] });
    const other = p('child-uuid.vhd');
    writeDifferencingVhd(other, { parent, size: parentRaw.length, sectors: new Map(), locators: [{ platform: 'W2ru', path: 'parent.vhd' }], parentUuid: Buffer.alloc(16, 7) });
    for (const [image, code, field] of [
      [none, 'ENOENT', 'parent_locator'],
      [loop, 'ECORRUPT', 'parent_locator'],
      [other, 'ECORRUPT', 'parent_uuid'],
    ] as const) {
      const t = Date.now();
      const e = (await rejection(openVpc(image, { readOnly: true }))) as BlockError;
      expect(Date.now() - t).toBeLessThan(1000);
      expect(e).toBeInstanceOf(BlockError);
      expect({ code: e.code, field: e.field }).toEqual({ code, field });
    }
  });
});

describe.skipIf(!available)('vpc: hostile images', () => {
  /** Sets the checksum of the structure of `length` bytes at `at` (its field at `at + field`). */
  function reseal(b: Buffer, at: number, length: number, field: number): void {
    b.writeUInt32BE(0, at + field);
    let sum = 0;
    for (let i = at; i < at + length; i++) sum += b[i];
    b.writeUInt32BE(~sum >>> 0, at + field);
  }
  /** Reseals the footer copy at 0 (or the dynamic header at 512) after the edits given as the later arguments were made. */
  const sealFooter = (b: Buffer, ..._edits: unknown[]) => reseal(b, 0, 512, 64);
  const sealHeader = (b: Buffer, ..._edits: unknown[]) => reseal(b, 512, 1024, 36);
  /** A patch that changes the image's bytes in place. */
  const edit = (change: (b: Buffer) => void) => (b: Buffer) => {
    change(b);
    return b;
  };

  let base: Buffer;
  beforeAll(() => {
    const image = p('hostile-base.vhd');
    qemuImg('create', '-q', '-f', 'vpc', image, '20M');
    qemuIo(image, ['write -P 0x42 0 4k', 'write -P 0x43 5m 4k'], 'vpc');
    base = fs.readFileSync(image);
  });

  const cases: [string, (b: Buffer) => Buffer, string, string][] = [
    ['a truncated file', (b) => b.subarray(0, b.length - 2 ** 20), 'ECORRUPT', 'bat'],
    ['a BAT entry far past the end', edit((b) => b.writeUInt32BE(0x00ffffff, 1536 + 4 * 2)), 'ECORRUPT', 'bat'],
    ['two BAT entries on one block', edit((b) => b.writeUInt32BE(b.readUInt32BE(1536), 1536 + 4 * 2)), 'ECORRUPT', 'bat'],
    ['a BAT entry over the dynamic header', edit((b) => b.writeUInt32BE(2, 1536)), 'ECORRUPT', 'bat'],
    ['an absurd max_table_entries', edit((b) => sealHeader(b, b.writeUInt32BE(0xffffffff, 512 + 28))), 'ENOTSUP', 'max_table_entries'],
    ['a BAT smaller than the disk', edit((b) => sealHeader(b, b.writeUInt32BE(1, 512 + 28))), 'ECORRUPT', 'max_table_entries'],
    ['a block size that is no power of two', edit((b) => sealHeader(b, b.writeUInt32BE(3 * 2 ** 20, 512 + 32))), 'ECORRUPT', 'block_size'],
    ['a wrong dynamic header checksum', edit((b) => b.writeUInt32BE(7, 512 + 60)), 'ECORRUPT', 'checksum'],
    ['a wrong footer checksum', edit((b) => b.writeUInt8(b[40] ^ 0xff, 40)), 'ECORRUPT', 'checksum'],
    ['a dynamic header offset past the end', edit((b) => sealFooter(b, b.writeBigUInt64BE(2n ** 40n, 16))), 'ECORRUPT', 'data_offset'],
    ['a dynamic header over the footer at the end', edit((b) => sealFooter(b, b.writeBigUInt64BE(BigInt(b.length - 1024), 16))), 'ECORRUPT', 'data_offset'],
    ['a BAT offset past the end', edit((b) => sealHeader(b, b.writeBigUInt64BE(2n ** 50n, 512 + 16))), 'ECORRUPT', 'table_offset'],
    ['a size beyond 2040 GiB', edit((b) => sealFooter(b, b.write('win ', 28, 'latin1'), b.writeBigUInt64BE(2n ** 50n, 48))), 'EFBIG', 'current_size'],
    ['an unknown disk type', edit((b) => sealFooter(b, b.writeUInt32BE(9, 60))), 'ENOTSUP', 'disk_type'],
    ['a file shorter than a footer', () => Buffer.alloc(100, 1), 'ECORRUPT', 'cookie'],
    ['no VHD at all', () => Buffer.alloc(2 ** 20, 0x5a), 'ECORRUPT', 'cookie'],
  ];
  for (const [name, patch, code, field] of cases) {
    it(`${name}: ${code} naming ${field}, within a second`, async () => {
      const image = p(`hostile-${name.replace(/\W+/g, '-')}.vhd`);
      fs.writeFileSync(image, patch(Buffer.from(base)));
      const t = Date.now();
      const e = (await rejection(openVpc(image, { readOnly: true }))) as BlockError;
      expect(Date.now() - t).toBeLessThan(1000);
      expect(e).toBeInstanceOf(BlockError);
      expect({ code: e.code, field: e.field }).toEqual({ code, field });
    });
  }

  it('a fixed image whose size runs into its footer: ECORRUPT naming current_size', async () => {
    const image = p('hostile-fixed.vhd');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', image, '1M');
    const b = fs.readFileSync(image);
    const footer = b.subarray(b.length - 512);
    footer.writeBigUInt64BE(BigInt(2 ** 21), 48);
    reseal(footer, 0, 512, 64);
    fs.writeFileSync(image, b);
    const e = (await rejection(openVpc(image, { readOnly: true }))) as BlockError;
    expect({ code: e.code, field: e.field }).toEqual({ code: 'ECORRUPT', field: 'current_size' });
  });
});

describe.skipIf(!available)('vpc: probing, block status, file layout', () => {
  it("driver 'auto' picks vpc for a dynamic image; a fixed one probes as raw, as in QEMU (its footer is at the end)", async () => {
    const dyn = p('probe-dynamic.vhd');
    const fixed = p('probe-fixed.vhd');
    qemuImg('create', '-q', '-f', 'vpc', dyn, '4M');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', fixed, '4M');
    for (const [image, format] of [
      [dyn, 'vpc'],
      [fixed, 'raw'],
    ] as const) {
      const node = await layer.openNode({ driver: 'auto', readOnly: true, file: { driver: 'file', filename: image } });
      try {
        expect(node.driver.name).toBe(format);
        expect(JSON.parse(qemuImg('info', '--output=json', image)).format).toBe(format);
      } finally {
        await node.unref();
      }
    }
  });

  it('block status marks data where qemu-img map does, for an image qemu-io wrote', async () => {
    const image = p('map.vhd');
    qemuImg('create', '-q', '-f', 'vpc', image, '20M');
    qemuIo(image, ['write -P 0x11 1m 4k', 'write -P 0x22 7m 100k', 'write -P 0x33 19m 512'], 'vpc');
    const theirs = JSON.parse(qemuImg('map', '--output=json', '-f', 'vpc', image)) as { start: number; length: number; data: boolean }[];
    const node = await openVpc(image, { readOnly: true });
    try {
      const ours = await node.blockStatusMap();
      for (const e of ours) {
        const t = theirs.find((x) => x.start <= e.offset && e.offset < x.start + x.length)!;
        expect(e.offset + e.length <= t.start + t.length && e.data === t.data).toBe(true);
      }
      expect(ours.filter((e) => e.data).length).toBeGreaterThan(0);
    } finally {
      await node.unref();
    }
  });

  it('after new blocks the file ends with a footer equal to the copy at offset 0, right after the last block', async () => {
    const image = p('layout.vhd');
    qemuImg('create', '-q', '-f', 'vpc', image, '12M');
    const node = await openVpc(image);
    await node.write(9 * 2 ** 20, Buffer.alloc(4096, 1));
    await node.write(1 * 2 ** 20, Buffer.alloc(4096, 2));
    await node.write(5 * 2 ** 20 + 512, Buffer.alloc(512, 3));
    await node.unref();
    const b = fs.readFileSync(image);
    expect(b.subarray(b.length - 512).equals(b.subarray(0, 512))).toBe(true);
    const bat = [0, 1, 2, 3, 4, 5].map((i) => b.readUInt32BE(1536 + 4 * i)).filter((e) => e !== 0xffffffff);
    expect(bat.length).toBe(3);
    expect(Math.max(...bat) * 512 + 512 + 2 * 2 ** 20).toBe(b.length - 512);
  });
});

describe.skipIf(!available)('vpc: which size counts', () => {
  it('a Hyper-V footer (creator "win ") counts current_size, force_size_calc=chs the geometry, as qemu-img with --image-opts', async () => {
    const image = p('hyperv.vhd');
    qemuImg('create', '-q', '-f', 'vpc', image, '10M');
    const b = fs.readFileSync(image);
    b.write('win ', 28, 'latin1');
    b.writeBigUInt64BE(10485760n, 48);
    b.writeUInt32BE(0, 64);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += b[i];
    b.writeUInt32BE(~sum >>> 0, 64);
    fs.writeFileSync(image, b);
    for (const calc of [undefined, 'chs', 'current_size'] as const) {
      const opts = `driver=vpc${calc ? `,force_size_calc=${calc}` : ''},file.filename=${image}`;
      const theirs = (JSON.parse(qemuImg('info', '--output=json', '--image-opts', opts)) as { 'virtual-size': number })['virtual-size'];
      const node = await openVpc(image, { readOnly: true, ...(calc ? { forceSizeCalc: calc } : {}) });
      expect(node.length).toBe(theirs);
      await node.unref();
    }
  });
});

describe.skipIf(!available)('vpc: a failed allocation leaves the image as it was', () => {
  // blkdebug fails one write of the allocation (the new block's bitmap, the footer after it, the
  // BAT entry) or its flush: the image must open again, read its old content, and take the write then.
  const failures = [
    ['the flush before the BAT entry', { event: 'flush' }],
    ['the BAT entry', { event: 'write', offset: 1536 + 4 * 2 }],
    ['the bitmap of the new block', { event: 'write', offset: 2048 + 512 + 2 ** 21 }],
    ['the footer after the new block', { event: 'write', offset: 2048 + 2 * (512 + 2 ** 21) }],
  ] as const;
  for (const [name, rule] of failures) {
    it(`${name} fails: the write fails, the image reads as before, then takes the write`, async () => {
      const image = p(`fail-${name.replace(/\W+/g, '-')}.vhd`);
      qemuImg('create', '-q', '-f', 'vpc', image, '10M');
      qemuIo(image, ['write -P 0x31 0 64k'], 'vpc');
      const before = qemuRaw(image);
      const node = await layer.openNode({ driver: 'vpc', file: { driver: 'blkdebug', rules: [{ ...rule, once: true }], file: { driver: 'file', filename: image } } });
      const data = Buffer.alloc(8192, 0x99);
      const e = (await rejection(node.write(4 * 2 ** 20 + 4096, data))) as BlockError;
      expect(e.code).toBe('EIO');
      await node.unref();
      expect(qemuRaw(image).equals(before)).toBe(true);
      const again = await openVpc(image);
      try {
        expect((await readAll(again)).equals(before)).toBe(true);
        await again.write(4 * 2 ** 20 + 4096, data);
      } finally {
        await again.unref();
      }
      const model = Buffer.from(before);
      data.copy(model, 4 * 2 ** 20 + 4096);
      const raw = p('fail.raw');
      fs.writeFileSync(raw, model);
      expect(qemuCompare(image, raw).code).toBe(0);
    });
  }
});
