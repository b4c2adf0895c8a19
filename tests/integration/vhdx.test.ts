import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { checksumWithField } from '../../src/drivers/vhdx/crc32c.js';
import { checkImage, type Drive, isBlockError, vhdxDriver } from '../../src/index.js';
import { imageSuite } from '../helpers/image-suite.js';
import { driveHash, haveQemuTools, qemuImg, qemuIo, referenceHash } from '../helpers/qemu-images.js';
import { buildLogEntry } from '../helpers/vhdx-log.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('vhdx: qemu-img comparisons skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const MiB = 1 << 20;
const suite = imageSuite('blocklayer-vhdx-');
const { p, layer } = suite;

const open = (image: string, readOnly = true) => layer.openDrive({ driver: 'vhdx', readOnly, file: { driver: 'file', filename: image } });

function qemuSize(image: string): number {
  return JSON.parse(qemuImg('info', '-U', '--output=json', image))['virtual-size'] as number;
}

/** qemu-img check's verdict (exit status 0: clean). */
function check(image: string): { code: number; out: string } {
  const r = spawnSync('qemu-img', ['check', '-f', 'vhdx', image], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}

/** Our whole read of an image equals qemu-img convert -O raw of it, and the sizes agree. */
async function compare(image: string) {
  const d = await open(image);
  try {
    expect(d.length).toBe(qemuSize(image));
    expect(await driveHash(d)).toBe(referenceHash(image, p('ref.raw')));
  } finally {
    await d.close();
  }
}

const WRITES = ['write -P 0xab 0 64k', 'write -P 0x11 100k 3k', 'write -P 0x22 9M 1536k', 'write -P 0x33 20M 512', 'write -P 0x44 41M 3M', 'write -P 0x55 62M 1M'];

describe.skipIf(!available)('vhdx images made by qemu-img read back byte-identical', () => {
  const cases: [string, string, string][] = [
    ['dynamic, automatic 8 MiB blocks', '', '64M'],
    ['dynamic, 1 MiB blocks', 'block_size=1M', '64M'],
    ['dynamic, 32 MiB blocks, an odd size', 'block_size=32M', '66061312'],
    ['dynamic, block_state_zero=off', 'block_state_zero=off,block_size=2M', '64M'],
    ['dynamic, a 3 MiB log', 'log_size=3M', '64M'],
    ['fixed', 'subformat=fixed', '64M'],
    ['fixed, block_state_zero=off (every block present)', 'subformat=fixed,block_state_zero=off,block_size=4M', '64M'],
  ];
  for (const [name, opts, size] of cases) {
    it(`${name}: scattered data, holes, partial blocks`, async () => {
      const img = p(`${name.replace(/[^a-z0-9]+/gi, '-')}.vhdx`);
      qemuImg('create', '-q', '-f', 'vhdx', ...(opts ? ['-o', opts] : []), img, size);
      qemuIo(img, WRITES, 'vhdx');
      await compare(img);
    });
  }

  it('an empty image and a fresh fixed image read as zeros', async () => {
    qemuImg('create', '-q', '-f', 'vhdx', p('empty.vhdx'), '10M');
    await compare(p('empty.vhdx'));
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'subformat=fixed,block_state_zero=off', p('fixed-empty.vhdx'), '10M');
    await compare(p('fixed-empty.vhdx'));
  });

  it('data past 4 GiB: the bytes qemu-io wrote and verifies', async () => {
    const img = p('big.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img, '6G');
    const at = 4 * 1024 * MiB + 3 * MiB + 4096;
    qemuIo(img, [`write -P 0x5a ${at} 70000`, `write -P 0x6b ${5 * 1024 * MiB} 1M`], 'vhdx');
    const d = await open(img);
    try {
      expect(d.length).toBe(6 * 1024 * MiB);
      expect(d.length).toBe(qemuSize(img));
      const got = await d.read(at - 4096, 70000 + 8192);
      const want = new Uint8Array(70000 + 8192);
      want.fill(0x5a, 4096, 4096 + 70000);
      expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
      expect((await d.read(5 * 1024 * MiB, MiB)).every((x) => x === 0x6b)).toBe(true);
      const s = await d.blockStatus(at, 1);
      expect(s).toMatchObject({ data: true, allocated: true, zero: false });
      expect((await d.blockStatus(4 * 1024 * MiB, 1)).data).toBe(false);
    } finally {
      await d.close();
    }
    // qemu-io confirms its view matches the same pattern
    execFileSync('qemu-io', ['-f', 'vhdx', '-c', `read -P 0x5a ${at} 70000`, '-c', `read -P 0 ${at + 70000} 4096`, img], { stdio: 'ignore' });
  });

  it('block status follows the BAT: present blocks hold data, ZERO blocks are allocated zeros, absent ones unallocated', async () => {
    const img = p('status.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img, '8M');
    qemuIo(img, ['write -P 1 2M 4k'], 'vhdx');
    const d = await open(img);
    try {
      expect(await d.blockStatus(0, 8 * MiB)).toMatchObject({ offset: 0, length: 2 * MiB, data: false, zero: true, allocated: true });
      expect(await d.blockStatus(2 * MiB, MiB)).toMatchObject({ data: true, allocated: true, zero: false, depth: 0 });
    } finally {
      await d.close();
    }
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,block_state_zero=off', p('status2.vhdx'), '8M');
    const e = await open(p('status2.vhdx'));
    try {
      expect(await e.blockStatus(0, 8 * MiB)).toMatchObject({ offset: 0, length: 8 * MiB, data: false, zero: true, allocated: false });
    } finally {
      await e.close();
    }
  });

  it("driver 'auto' probes a VHDX as vhdx", async () => {
    qemuImg('create', '-q', '-f', 'vhdx', p('probe.vhdx'), '4M');
    qemuIo(p('probe.vhdx'), ['write -P 0x17 1M 4k'], 'vhdx');
    const d = await layer.openDrive({ driver: 'auto', readOnly: true, file: { driver: 'file', filename: p('probe.vhdx') } });
    try {
      expect(d.node.driver.name).toBe('vhdx');
      expect((await d.read(MiB, 4096)).every((x) => x === 0x17)).toBe(true);
    } finally {
      await d.close();
    }
  });

  it('info: the block size as cluster size, the subformat, the sector sizes', async () => {
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'subformat=fixed,block_size=2M', p('info.vhdx'), '16M');
    const info = JSON.parse(qemuImg('info', '--output=json', p('info.vhdx')));
    const d = await open(p('info.vhdx'));
    try {
      const ours = d.node.info();
      expect(ours).toMatchObject({ format: 'vhdx', clusterSize: info['cluster-size'], subformat: 'fixed', logicalSectorSize: 512, physicalSectorSize: 512, logSize: MiB });
    } finally {
      await d.close();
    }
  });
});

/** A small deterministic PRNG (xorshift32), so a failing case can be replayed. */
function prng(seed: number) {
  let s = seed >>> 0 || 1;
  return (n: number) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
}

async function expectModel(d: Drive, model: Uint8Array) {
  const got = await d.read(0, model.length);
  expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(model).digest('hex'));
}

/** qemu-img check is clean and qemu-img compare finds the image equal to the raw model. */
function judge(image: string, model: Uint8Array) {
  const c = check(image);
  expect(c.out).toContain('No errors were found');
  expect(c.code).toBe(0);
  fs.writeFileSync(p('model.raw'), model);
  const r = spawnSync('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', image, p('model.raw')], { encoding: 'utf8' });
  expect(r.stdout + r.stderr).toContain('Images are identical');
  expect(r.status).toBe(0);
}

describe.skipIf(!available)('writes through our vhdx driver, judged by qemu-img', () => {
  for (const [name, opts] of [
    ['dynamic, 1 MiB blocks', 'block_size=1M'],
    ['dynamic, block_state_zero=off', 'block_size=2M,block_state_zero=off'],
    ['fixed, every block present', 'subformat=fixed,block_state_zero=off,block_size=1M'],
  ] as const) {
    it(`${name}: random writes and zero writes match a model`, async () => {
      const img = p(`w-${name.replace(/[^a-z0-9]+/gi, '-')}.vhdx`);
      const size = 24 * MiB + 512 * 3;
      qemuImg('create', '-q', '-f', 'vhdx', '-o', opts, img, String(size));
      qemuIo(img, ['write -P 0x77 5M 100k'], 'vhdx');
      const model = new Uint8Array(size);
      model.fill(0x77, 5 * MiB, 5 * MiB + 100 * 1024);
      const rnd = prng(name.length * 7919);
      const d = await open(img, false);
      try {
        for (let i = 0; i < 60; i++) {
          const len = 1 + rnd(i % 5 === 0 ? 3 * MiB : 70000);
          const off = rnd(size - len + 1);
          if (i % 7 === 3) {
            await d.writeZeroes(off, len);
            model.fill(0, off, off + len);
          } else {
            const data = new Uint8Array(len).fill(1 + rnd(255));
            data[0] = i;
            await d.write(off, data);
            model.set(data, off);
          }
        }
        await expectModel(d, model);
      } finally {
        await d.close();
      }
      judge(img, model);
      const again = await open(img);
      try {
        await expectModel(again, model);
      } finally {
        await again.close();
      }
    });
  }

  it('concurrent writes into one unallocated block allocate it once', async () => {
    const img = p('concurrent.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img, '8M');
    const model = new Uint8Array(8 * MiB);
    const d = await open(img, false);
    const before = fs.statSync(img).size;
    try {
      const writes = [];
      for (let i = 0; i < 16; i++) {
        const data = new Uint8Array(4096).fill(i + 1);
        model.set(data, 3 * MiB + i * 8192);
        writes.push(d.write(3 * MiB + i * 8192, data));
      }
      await Promise.all(writes);
      await expectModel(d, model);
    } finally {
      await d.close();
    }
    expect(fs.statSync(img).size - before).toBeLessThanOrEqual(2 * MiB); // one new block (and alignment)
    judge(img, model);
  });

  it('writes past 4 GiB land where qemu-io reads them', async () => {
    const img = p('big-write.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', img, '5G');
    const at = 4 * 1024 * MiB + 12345 * 512;
    const d = await open(img, false);
    try {
      await d.write(at, new Uint8Array(300000).fill(0xc3));
    } finally {
      await d.close();
    }
    expect(check(p('big-write.vhdx')).code).toBe(0);
    execFileSync('qemu-io', ['-f', 'vhdx', '-c', `read -P 0xc3 ${at} 300000`, '-c', `read -P 0 ${at - 512} 512`, '-c', `read -P 0 ${at + 300000} 4096`, img], { stdio: 'ignore' });
  });

  it('the first write gives both headers a new data write GUID and higher sequence numbers', async () => {
    const img = p('guid.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', img, '8M');
    const headerOf = (b: Buffer, at: number) => ({ seq: b.readBigUInt64LE(at + 8), data: b.subarray(at + 32, at + 48).toString('hex') });
    const before = fs.readFileSync(img);
    const d = await open(img, false);
    await d.write(0, new Uint8Array(512).fill(1));
    await d.close();
    const after = fs.readFileSync(img);
    const [b1, b2, a1, a2] = [headerOf(before, 65536), headerOf(before, 131072), headerOf(after, 65536), headerOf(after, 131072)];
    expect(a1.data).toBe(a2.data);
    expect(a1.data).not.toBe(b1.data);
    let maxBefore = b1.seq;
    if (b2.seq > maxBefore) maxBefore = b2.seq;
    expect([a1.seq, a2.seq].sort()).toEqual([maxBefore + 1n, maxBefore + 2n]);
    expect(check(img).code).toBe(0);
  });
});

/** Creates an image with our driver's creator on a new empty file; returns the size it got. */
async function createWithUs(image: string, size: number, options: Record<string, unknown>, backing?: { name: string; format: string; size: number }): Promise<number> {
  fs.writeFileSync(image, '');
  const node = await layer.openNode({ driver: 'file', filename: image });
  try {
    return await vhdxDriver.create!.create(node, size, options, backing);
  } finally {
    await node.unref();
  }
}

describe.skipIf(!available)('images our vhdx create makes', () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['defaults', {}, ''],
    ['fixed', { subformat: 'fixed' }, 'subformat=fixed'],
    ['fixed, block_state_zero=off', { subformat: 'fixed', block_state_zero: 'off' }, 'subformat=fixed,block_state_zero=off'],
    ['dynamic, block_state_zero=off, 1 MiB blocks', { block_state_zero: false, block_size: '1M' }, 'block_state_zero=off,block_size=1M'],
    ['a 4 MiB log, 4 MiB blocks', { log_size: '4M', block_size: '4M' }, 'log_size=4M,block_size=4M'],
  ];
  for (const [name, ours, theirs] of cases) {
    it(`${name}: qemu-img check is clean, info agrees with a qemu-img made twin, data round-trips`, async () => {
      const size = 40 * MiB + 1000; // rounded up to whole sectors, as qemu-img does
      const img = p(`c-${name.replace(/[^a-z0-9]+/gi, '-')}.vhdx`);
      const twin = p(`t-${name.replace(/[^a-z0-9]+/gi, '-')}.vhdx`);
      expect(await createWithUs(img, size, ours)).toBe(40 * MiB + 1024);
      qemuImg('create', '-q', '-f', 'vhdx', ...(theirs ? ['-o', theirs] : []), twin, String(size));
      expect(check(img).code).toBe(0);
      const a = JSON.parse(qemuImg('info', '--output=json', img));
      const b = JSON.parse(qemuImg('info', '--output=json', twin));
      expect([a['virtual-size'], a['cluster-size']]).toEqual([b['virtual-size'], b['cluster-size']]);
      expect(fs.statSync(img).size).toBe(fs.statSync(twin).size); // the same layout
      qemuIo(img, ['write -P 0x3c 1M 70k', 'write -P 0x4d 39M 1M'], 'vhdx');
      await compare(img);
      const model = new Uint8Array(40 * MiB + 1024);
      model.fill(0x3c, MiB, MiB + 70 * 1024);
      model.fill(0x4d, 39 * MiB, 40 * MiB);
      const d = await open(img, false);
      try {
        await d.write(20 * MiB - 10, new Uint8Array(20).fill(0xee));
        model.fill(0xee, 20 * MiB - 10, 20 * MiB + 10);
      } finally {
        await d.close();
      }
      judge(img, model);
    });
  }

  it('block_size 0 picks the size-based default, larger ones are capped at 256 MiB, and bad options are refused', async () => {
    await createWithUs(p('auto.vhdx'), 2 * 1024 * MiB, { block_size: 0 });
    expect(JSON.parse(qemuImg('info', '--output=json', p('auto.vhdx')))['cluster-size']).toBe(16 * MiB);
    await createWithUs(p('cap.vhdx'), 64 * MiB, { block_size: '512M' });
    expect(JSON.parse(qemuImg('info', '--output=json', p('cap.vhdx')))['cluster-size']).toBe(256 * MiB);
    expect(check(p('cap.vhdx')).code).toBe(0);
    await expect(createWithUs(p('bad.vhdx'), MiB, { block_size: '3M' })).rejects.toMatchObject({ code: 'EINVAL', field: 'block_size' });
    await expect(createWithUs(p('bad.vhdx'), MiB, { cluster_size: '1M' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('cluster_size') });
    await expect(createWithUs(p('bad.vhdx'), MiB, { subformat: 'diff' })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(createWithUs(p('bad.vhdx'), 65 * 1024 * 1024 * MiB, {})).rejects.toMatchObject({ code: 'EINVAL', field: 'size' });
  });
});

/** Sets the log GUID in both headers of `image` (checksums redone), as a crash with a dirty log leaves it. */
function setLogGuid(image: string, guid: Uint8Array) {
  const fd = fs.openSync(image, 'r+');
  try {
    for (const at of [65536, 131072]) {
      const h = Buffer.alloc(4096);
      fs.readSync(fd, h, 0, 4096, at);
      h.set(guid, 48);
      h.writeUInt32LE(checksumWithField(h, 4), 4);
      fs.writeSync(fd, h, 0, 4096, at);
    }
  } finally {
    fs.closeSync(fd);
  }
}

describe.skipIf(!available)('the vhdx log: an entry built from the spec, replayed by us as by qemu-img', () => {
  const guid = Uint8Array.from({ length: 16 }, (_, i) => i * 17 + 3);
  /**
   * A 16 MiB image (1 MiB blocks; log at 1 MiB, BAT at 2 MiB, data from 8 MiB) whose log points
   * block 0 at a payload block at 8 MiB, zeroes 8 KiB of it and writes one 4 KiB sector in it.
   */
  function dirtyImage(name: string): { image: string; model: Uint8Array } {
    const image = p(name);
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', image, '16M');
    const fd = fs.openSync(image, 'r+');
    const batSector = Buffer.alloc(4096);
    fs.readSync(fd, batSector, 0, 4096, 2 * MiB);
    batSector.writeBigUInt64LE(BigInt(8 * MiB) | 6n, 0); // block 0: FULLY_PRESENT at 8 MiB
    fs.writeSync(fd, Buffer.alloc(MiB, 0x21), 0, MiB, 8 * MiB); // the block's data, written before the crash
    const fileSize = fs.fstatSync(fd).size;
    const sector = new Uint8Array(4096).fill(0x99);
    sector[0] = 1;
    sector[4095] = 2;
    const entry = buildLogEntry({
      sequence: 77n,
      logGuid: guid,
      changes: [
        { fileOffset: 2 * MiB, data: batSector },
        { fileOffset: 8 * MiB + 4096, zeroLength: 8192 },
        { fileOffset: 8 * MiB + 65536, data: sector },
      ],
      flushedFileOffset: fileSize,
      lastFileOffset: 10 * MiB - 4096, // QEMU grows the file only to a last_file_offset off a MiB boundary (rounded up)
    });
    fs.writeSync(fd, entry, 0, entry.length, MiB);
    fs.closeSync(fd);
    setLogGuid(image, guid);
    const model = new Uint8Array(16 * MiB);
    model.fill(0x21, 0, MiB);
    model.fill(0, 4096, 4096 + 8192);
    model.set(sector, 65536);
    return { image, model };
  }

  it('read-only, both refuse an image whose log needs a replay', async () => {
    const { image } = dirtyImage('dirty-ro.vhdx');
    const r = spawnSync('qemu-img', ['info', image], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('contains a log that needs to be replayed');
    const e = await open(image).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(isBlockError(e, 'EACCES')).toBe(true);
    expect((e as Error).message).toContain('contains a log that needs to be replayed');
  });

  it('read-write, we replay it to the same image qemu-img check -r all makes, and clear the log GUID', async () => {
    const ours = dirtyImage('dirty-ours.vhdx');
    const theirs = dirtyImage('dirty-theirs.vhdx');
    spawnSync('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', theirs.image], { encoding: 'utf8' });
    expect(check(theirs.image).code).toBe(0);
    const d = await open(ours.image, false);
    try {
      expect(d.node.info().logReplayed).toBe(true);
      await expectModel(d, ours.model);
    } finally {
      await d.close();
    }
    expect(check(ours.image).code).toBe(0);
    expect(fs.statSync(ours.image).size).toBe(fs.statSync(theirs.image).size); // grown to last_file_offset
    const r = spawnSync('qemu-img', ['compare', '-f', 'vhdx', '-F', 'vhdx', ours.image, theirs.image], { encoding: 'utf8' });
    expect(r.stdout).toContain('Images are identical');
    const head = fs.readFileSync(ours.image).subarray(65536, 196608);
    expect(head.subarray(48, 64).every((x) => x === 0) && head.subarray(65536 + 48, 65536 + 64).every((x) => x === 0)).toBe(true);
    const again = await open(ours.image); // read-only now works
    try {
      await expectModel(again, ours.model);
    } finally {
      await again.close();
    }
  });

  it('a log GUID without a valid entry (a torn entry) needs no replay', async () => {
    const { image } = dirtyImage('torn.vhdx');
    const fd = fs.openSync(image, 'r+');
    fs.writeSync(fd, Buffer.from([0xff]), 0, 1, MiB + 200); // inside the entry: its checksum fails
    fs.closeSync(fd);
    expect(spawnSync('qemu-img', ['info', image]).status).toBe(0);
    const d = await open(image);
    try {
      expect((await d.read(0, 4096)).every((x) => x === 0)).toBe(true); // block 0 is still ZERO
    } finally {
      await d.close();
    }
  });
});

describe.skipIf(!available)('hostile vhdx images: a clear BlockError within a second', () => {
  const RT = 192 * 1024;
  const META = 3 * MiB; // a 16 MiB image with 1 MiB blocks: log 1 MiB, BAT 2 MiB, metadata 3 MiB
  let base: Buffer;
  beforeAll(() => {
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', p('base.vhdx'), '16M');
    qemuIo(p('base.vhdx'), ['write -P 0x41 0 1M', 'write -P 0x42 5M 4k'], 'vhdx');
    base = fs.readFileSync(p('base.vhdx'));
  });
  const fixRegionTable = (b: Buffer) => b.writeUInt32LE(checksumWithField(b.subarray(RT, RT + 65536), 4), RT + 4);
  const batEntry = (block: number) => 2 * MiB + block * 8;

  async function refused(name: string, patch: (b: Buffer) => Buffer | undefined, code: string, field?: string, readOnly = true) {
    const b = Buffer.from(base);
    const out = patch(b) ?? b;
    const image = p(`hostile-${name}.vhdx`);
    fs.writeFileSync(image, out);
    const started = performance.now();
    const e = await (async () => {
      const d = await open(image, readOnly);
      try {
        await d.read(0, 16 * MiB);
      } finally {
        await d.close();
      }
    })().then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(performance.now() - started).toBeLessThan(1000);
    expect(isBlockError(e), `${name}: ${String(e)}`).toBe(true);
    expect(e).toMatchObject({ code, ...(field ? { field } : {}) });
  }

  it('the base image opens (the patches below are what breaks it)', async () => {
    await compare(p('base.vhdx'));
  });
  it('a file shorter than the header section', () => refused('short', (b) => b.subarray(0, 300000), 'ECORRUPT', 'header'));
  it('a truncated file: a block past the end', () => refused('truncated', (b) => b.subarray(0, b.length - 512 * 1024), 'ECORRUPT', 'bat'));
  it('both headers with bad checksums', () =>
    refused('headers', (b) => {
      b[65536 + 300] ^= 1;
      b[131072 + 300] ^= 1;
      return b;
    }, 'ECORRUPT', 'header'));
  it('a region table with a bad checksum', () =>
    refused('rt-crc', (b) => {
      b[RT + 1000] ^= 1;
      return b;
    }, 'ECORRUPT', 'checksum'));
  it('a region table with 5000 entries', () =>
    refused('rt-count', (b) => {
      b.writeUInt32LE(5000, RT + 8);
      fixRegionTable(b);
      return b;
    }, 'ECORRUPT', 'entry_count'));
  it('the BAT region overlapping the metadata region', () =>
    refused('rt-overlap', (b) => {
      b.writeBigUInt64LE(BigInt(META), RT + 16 + 16);
      fixRegionTable(b);
      return b;
    }, 'ECORRUPT'));
  it('a region past the end of the file', () =>
    refused('rt-past-end', (b) => {
      b.writeBigUInt64LE(2n ** 60n, RT + 48 + 16);
      fixRegionTable(b);
      return b;
    }, 'ECORRUPT'));
  it('an unknown region marked required', () =>
    refused('rt-unknown', (b) => {
      b.writeUInt32LE(3, RT + 8);
      b.fill(0x5c, RT + 80, RT + 96);
      b.writeBigUInt64LE(BigInt(12 * MiB), RT + 80 + 16);
      b.writeUInt32LE(MiB, RT + 80 + 24);
      b.writeUInt32LE(1, RT + 80 + 28);
      fixRegionTable(b);
      return b;
    }, 'ENOTSUP'));
  it('a block size of 3 MiB', () =>
    refused('block-size', (b) => {
      b.writeUInt32LE(3 * MiB, META + 65536);
      return b;
    }, 'ECORRUPT', 'block_size'));
  it('a virtual size of 2^62 bytes', () =>
    refused('huge', (b) => {
      b.writeBigUInt64LE(2n ** 62n, META + 65536 + 8);
      return b;
    }, 'ECORRUPT', 'virtual_disk_size'));
  it('a virtual size the BAT region cannot map (64 TiB with 1 MiB blocks)', () =>
    refused('bat-small', (b) => {
      b.writeBigUInt64LE(64n * 2n ** 40n, META + 65536 + 8);
      return b;
    }, 'ECORRUPT', 'bat'));
  it('a metadata item outside the metadata region', () =>
    refused('meta-item', (b) => {
      b.writeUInt32LE(2 * MiB, META + 32 + 16);
      return b;
    }, 'ECORRUPT', 'offset'));
  it('a differencing image (has_parent), which QEMU 7.2 refuses too', async () => {
    await refused('parent', (b) => {
      b.writeUInt32LE(2, META + 65536 + 4);
      return b;
    }, 'ECORRUPT', 'has_parent');
    expect(spawnSync('qemu-img', ['info', p('hostile-parent.vhdx')]).status).not.toBe(0);
  });
  it('a BAT entry pointing into the header section', () =>
    refused('bat-header', (b) => {
      b.writeBigUInt64LE(6n, batEntry(3));
      return b;
    }, 'ECORRUPT', 'bat'));
  it('a BAT entry pointing at the BAT itself', () =>
    refused('bat-self', (b) => {
      b.writeBigUInt64LE(BigInt(2 * MiB) | 6n, batEntry(3));
      return b;
    }, 'ECORRUPT', 'bat'));
  it('two BAT entries pointing at one block', () =>
    refused('bat-twice', (b) => {
      b.writeBigUInt64LE(b.readBigUInt64LE(batEntry(0)), batEntry(7));
      return b;
    }, 'ECORRUPT', 'bat'));
  it('a BAT entry with an offset past 2^53', () =>
    refused('bat-far', (b) => {
      b.writeBigUInt64LE(0xfffffffffff00006n, batEntry(2));
      return b;
    }, 'ECORRUPT', 'bat'));
  it('a partially present block in an image without parent', () =>
    refused('bat-partial', (b) => {
      b.writeBigUInt64LE(7n, batEntry(9));
      return b;
    }, 'ECORRUPT', 'bat'));
  it('a log offset off a MiB boundary', () =>
    refused('log-offset', (b) => {
      for (const at of [65536, 131072]) {
        b.writeBigUInt64LE(BigInt(MiB + 4096), at + 72);
        b.writeUInt32LE(checksumWithField(b.subarray(at, at + 4096), 4), at + 4);
      }
      return b;
    }, 'ECORRUPT', 'log_offset'));
  it('a log entry that would zero 2^50 bytes', () =>
    refused('log-zero-huge', (b) => {
      const guid = new Uint8Array(16).fill(8);
      const entry = buildLogEntry({ sequence: 1n, logGuid: guid, changes: [{ fileOffset: 4 * MiB, zeroLength: 2 ** 50 }], flushedFileOffset: 0, lastFileOffset: 0 });
      b.set(entry, MiB);
      for (const at of [65536, 131072]) {
        b.set(guid, at + 48);
        b.writeUInt32LE(checksumWithField(b.subarray(at, at + 4096), 4), at + 4);
      }
      return b;
    }, 'ECORRUPT', 'file_offset', false));
  it('a log entry that would write into the header section', () =>
    refused('log-target', (b) => {
      const guid = new Uint8Array(16).fill(9);
      const entry = buildLogEntry({ sequence: 1n, logGuid: guid, changes: [{ fileOffset: 65536, data: new Uint8Array(4096) }], flushedFileOffset: 0, lastFileOffset: 0 });
      b.set(entry, MiB);
      for (const at of [65536, 131072]) {
        b.set(guid, at + 48);
        b.writeUInt32LE(checksumWithField(b.subarray(at, at + 4096), 4), at + 4);
      }
      return b;
    }, 'ECORRUPT', 'file_offset', false));
});

describe.skipIf(!available)('vhdx check, as qemu-img check -f vhdx', () => {
  it('a clean image has no corruptions; a truncated one has, as qemu-img check finds', async () => {
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', p('chk.vhdx'), '16M');
    qemuIo(p('chk.vhdx'), ['write -P 1 0 1M', 'write -P 2 7M 1M'], 'vhdx');
    expect(await checkImage(p('chk.vhdx'), { format: 'vhdx' })).toMatchObject({ format: 'vhdx', corruptions: 0, corruptionsFixed: 0 });
    fs.truncateSync(p('chk.vhdx'), fs.statSync(p('chk.vhdx')).size - 512 * 1024);
    const lines: string[] = [];
    const r = await checkImage(p('chk.vhdx'), { format: 'vhdx', log: (l) => lines.push(l) });
    expect(r.corruptions).toBe(1);
    expect(lines.join('\n')).toContain('truncated');
    const q = check(p('chk.vhdx'));
    expect(q.code).toBe(2); // qemu-img: corruptions found
    expect(q.out).toContain('has probably been truncated');
  });

  it('a dirty log: refused without repair, replayed with -r all and counted as fixed', async () => {
    const guid = new Uint8Array(16).fill(5);
    const image = p('chk-log.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', image, '8M');
    const fd = fs.openSync(image, 'r+');
    const size = fs.fstatSync(fd).size;
    const entry = buildLogEntry({ sequence: 3n, logGuid: guid, changes: [{ fileOffset: 2 * MiB + 65536, zeroLength: 4096 }], flushedFileOffset: size, lastFileOffset: size });
    fs.writeSync(fd, entry, 0, entry.length, MiB);
    fs.closeSync(fd);
    setLogGuid(image, guid);
    await expect(checkImage(image, { format: 'vhdx' })).rejects.toMatchObject({ code: 'EACCES' });
    expect(await checkImage(image, { format: 'vhdx', repair: 'all' })).toMatchObject({ corruptions: 0, corruptionsFixed: 1 });
    expect(check(image).code).toBe(0);
    expect(await checkImage(image, { format: 'vhdx' })).toMatchObject({ corruptions: 0, corruptionsFixed: 0 });
  });
});

describe.skipIf(!available)('vhdx writes, a property: any sequence of writes and zero writes reads back as a model', () => {
  const SIZE = 5 * MiB + 3 * 512;
  const op = fc.record({
    zero: fc.boolean(),
    offset: fc.integer({ min: 0, max: SIZE - 1 }),
    length: fc.integer({ min: 1, max: 2 * MiB }),
    fill: fc.integer({ min: 1, max: 255 }),
    parallel: fc.boolean(),
  });
  it('in parallel or in turn, before and after a reopen, and to qemu-img compare', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), fc.constantFrom('dynamic', 'fixed'), async (ops, subformat) => {
        const img = p(`prop-${run++}.vhdx`);
        await createWithUs(img, SIZE, { block_size: '1M', subformat, block_state_zero: run % 2 === 0 });
        const model = new Uint8Array(SIZE);
        const d = await open(img, false);
        try {
          let batch: Promise<void>[] = [];
          let ranges: [number, number][] = [];
          for (const o of ops) {
            const length = Math.min(o.length, SIZE - o.offset);
            const end = o.offset + length;
            // requests in flight together touch disjoint bytes (overlapping ones would race by design), often the same blocks
            if (!o.parallel || ranges.some(([s, e]) => o.offset < e && s < end)) {
              await Promise.all(batch);
              batch = [];
              ranges = [];
            }
            ranges.push([o.offset, end]);
            if (o.zero) {
              model.fill(0, o.offset, end);
              batch.push(d.writeZeroes(o.offset, length));
            } else {
              model.fill(o.fill, o.offset, end);
              batch.push(d.write(o.offset, new Uint8Array(length).fill(o.fill)));
            }
          }
          await Promise.all(batch);
          await expectModel(d, model);
        } finally {
          await d.close();
        }
        const again = await open(img);
        try {
          await expectModel(again, model);
        } finally {
          await again.close();
        }
        judge(img, model);
      }),
      { numRuns: 12 },
    );
  });
});

describe.skipIf(!available)('differencing vhdx images (has_parent; QEMU 7.2 refuses them): made, read and written by us', () => {
  const SIZE = 12 * MiB;
  function parentImage(name: string): { image: string; content: Uint8Array } {
    const image = p(name);
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', image, String(SIZE));
    qemuIo(image, ['write -P 0xa1 0 1536k', 'write -P 0xa2 2M 1M', 'write -P 0xa3 5M 4k', 'write -P 0xa4 11M 1M'], 'vhdx');
    execFileSync('qemu-img', ['convert', '-O', 'raw', image, `${image}.raw`]);
    return { image, content: new Uint8Array(fs.readFileSync(`${image}.raw`)) };
  }
  async function childOf(name: string, parent: string): Promise<string> {
    const image = p(name);
    await createWithUs(image, SIZE, { block_size: '1M' }, { name: path.basename(parent), format: 'vhdx', size: SIZE });
    return image;
  }

  it('a new child reads as its parent, reports the parent at depth 1, and qemu-img refuses it as QEMU does', async () => {
    const parent = parentImage('parent1.vhdx');
    const child = await childOf('child1.vhdx', parent.image);
    expect(spawnSync('qemu-img', ['info', child]).status).not.toBe(0);
    const d = await open(child);
    try {
      expect(d.node.info()).toMatchObject({ hasParent: true, parentLocator: { relative_path: '.\\parent1.vhdx' } });
      await expectModel(d, parent.content);
      expect(await d.blockStatus(2 * MiB, MiB)).toMatchObject({ data: true, depth: 1 });
      expect(await d.blockStatus(8 * MiB, MiB)).toMatchObject({ data: false, zero: true });
    } finally {
      await d.close();
    }
  });

  it('writes go to the child (blocks filled from the parent), the parent stays as it was', async () => {
    const parent = parentImage('parent2.vhdx');
    const child = await childOf('child2.vhdx', parent.image);
    const before = fs.readFileSync(parent.image);
    const model = parent.content.slice();
    const d = await open(child, false);
    try {
      const rnd = prng(99);
      for (let i = 0; i < 40; i++) {
        const len = 1 + rnd(300000);
        const off = rnd(SIZE - len);
        if (i % 5 === 4) {
          await d.writeZeroes(off, len);
          model.fill(0, off, off + len);
        } else {
          await d.write(off, new Uint8Array(len).fill(i + 1));
          model.fill(i + 1, off, off + len);
        }
      }
      await d.writeZeroes(MiB, MiB); // a whole block over parent data: ZERO state
      model.fill(0, MiB, 2 * MiB);
      await expectModel(d, model);
    } finally {
      await d.close();
    }
    const again = await open(child);
    try {
      await expectModel(again, model);
    } finally {
      await again.close();
    }
    expect(fs.readFileSync(parent.image).equals(before)).toBe(true);
    expect(check(parent.image).code).toBe(0);
  });

  it('a partially present block takes present sectors from the child (sector bitmap), the rest from the parent', async () => {
    const parent = parentImage('parent3.vhdx');
    const child = await childOf('child3.vhdx', parent.image);
    // block 2: a payload block of 0xee at the file's end, sectors 0..7 and 16 marked present in chunk 0's bitmap
    const fd = fs.openSync(child, 'r+');
    const end = Math.ceil(fs.fstatSync(fd).size / MiB) * MiB;
    fs.writeSync(fd, Buffer.alloc(MiB, 0xee), 0, MiB, end);
    const bitmap = Buffer.alloc(MiB);
    const first = 2 * 2048; // block 2's first sector in the chunk (2048 sectors of 512 bytes a block)
    for (const s of [0, 1, 2, 3, 4, 5, 6, 7, 16]) bitmap[(first + s) >> 3] |= 1 << ((first + s) & 7);
    fs.writeSync(fd, bitmap, 0, MiB, end + MiB);
    const entry = Buffer.alloc(8);
    entry.writeBigUInt64LE(BigInt(end) | 7n);
    fs.writeSync(fd, entry, 0, 8, 2 * MiB + 2 * 8);
    entry.writeBigUInt64LE(BigInt(end + MiB) | 6n);
    fs.writeSync(fd, entry, 0, 8, 2 * MiB + 4096 * 8); // chunk 0's bitmap entry follows its 4096 payload entries
    fs.closeSync(fd);
    const model = parent.content.slice();
    model.fill(0xee, 2 * MiB, 2 * MiB + 4096);
    model.fill(0xee, 2 * MiB + 16 * 512, 2 * MiB + 17 * 512);
    const d = await open(child, false);
    try {
      await expectModel(d, model);
      expect(await d.blockStatus(2 * MiB, MiB)).toMatchObject({ length: 4096, data: true, depth: 0 });
      expect(await d.blockStatus(2 * MiB + 4096, MiB)).toMatchObject({ length: 4096, depth: 1 });
      await d.write(2 * MiB + 100000, new Uint8Array(10).fill(0x5f)); // the block becomes fully present
      model.fill(0x5f, 2 * MiB + 100000, 2 * MiB + 100010);
      await expectModel(d, model);
      expect(await d.blockStatus(2 * MiB + 4096, 4096)).toMatchObject({ data: true, depth: 0 });
    } finally {
      await d.close();
    }
  });

  it('a parent changed since (its data write GUID is not the linkage) or missing is refused', async () => {
    const parent = parentImage('parent4.vhdx');
    const child = await childOf('child4.vhdx', parent.image);
    qemuIo(parent.image, ['write -P 0x01 0 512'], 'vhdx');
    await expect(open(child)).rejects.toMatchObject({ code: 'ECORRUPT', field: 'parent_linkage' });
    fs.rmSync(parent.image);
    await expect(open(child)).rejects.toMatchObject({ code: 'ENOENT', field: 'parent_locator' });
    const d = await layer.openDrive({ driver: 'vhdx', readOnly: true, backing: null, file: { driver: 'file', filename: child } });
    try {
      expect((await d.read(0, 4096)).every((x) => x === 0)).toBe(true); // backing: null: no parent, zeros
    } finally {
      await d.close();
    }
  });
});

describe.skipIf(!available)('vhdx allocation ordering under a failing BAT write (blkdebug)', () => {
  it('the write fails, the table keeps its old entry, the image stays clean and the next write allocates', async () => {
    const img = p('failing.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img, '8M');
    const batEntry3 = 2 * MiB + 3 * 8;
    const d = await layer.openDrive({
      driver: 'vhdx',
      file: { driver: 'blkdebug', rules: [{ event: 'write', offset: batEntry3, once: true }], file: { driver: 'file', filename: img } },
    });
    const model = new Uint8Array(8 * MiB);
    try {
      await expect(d.write(3 * MiB + 512, new Uint8Array(4096).fill(0x61))).rejects.toMatchObject({ code: 'EIO' });
      expect((await d.read(3 * MiB, MiB)).every((x) => x === 0)).toBe(true); // the data went nowhere visible
      expect(await d.blockStatus(3 * MiB, MiB)).toMatchObject({ data: false });
      await d.write(3 * MiB + 512, new Uint8Array(4096).fill(0x62)); // the rule is spent: a new block
      model.fill(0x62, 3 * MiB + 512, 3 * MiB + 512 + 4096);
      await expectModel(d, model);
    } finally {
      await d.close();
    }
    judge(img, model); // the first block is an unreferenced leftover past the old end: no error for qemu-img
  });
});
