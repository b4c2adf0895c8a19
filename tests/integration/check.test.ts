import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type CheckResult, checkImage, repairRefcounts } from '../../src/index.js';
import { haveQemuTools, qemuImg, qemuIo, setQemuCwd } from '../helpers/qemu-images.js';
import { COPIED, OFFSET_MASK, Qcow2Patcher } from '../helpers/qcow2-patch.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('qcow2 check comparisons skipped: install qemu-utils (apt-get install qemu-utils) to run them');

let dir: string;
const p = (name: string) => path.join(dir, name);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-check-'));
  setQemuCwd(dir);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const FIELDS = ['checkErrors', 'imageEndOffset', 'totalClusters', 'allocatedClusters', 'fragmentedClusters', 'compressedClusters', 'corruptions', 'leaks', 'corruptionsFixed', 'leaksFixed'] as const;

/** qemu-img check's JSON (absent counts are 0), camelCased, and its exit code. */
function qemuCheck(image: string, repair?: string): { counts: Record<string, number>; code: number | null; stderr: string } {
  const r = spawnSync('qemu-img', ['check', '--output=json', ...(repair ? ['-r', repair] : []), image], { encoding: 'utf8', cwd: dir });
  const json = r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : {};
  const counts: Record<string, number> = {};
  for (const f of FIELDS) counts[f] = Number(json[f.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)] ?? 0);
  return { counts, code: r.status, stderr: r.stderr };
}

const countsOf = (r: CheckResult) => Object.fromEntries(FIELDS.map((f) => [f, r[f]]));

/** Our check and qemu-img's agree on every count. */
async function agrees(image: string): Promise<Record<string, number>> {
  const theirs = qemuCheck(image);
  const ours = await checkImage(image);
  expect(countsOf(ours)).toEqual(theirs.counts);
  return theirs.counts;
}

function rawHash(image: string): string {
  const out = p('hash.raw');
  qemuImg('convert', '-O', 'raw', image, out);
  const h = createHash('sha256').update(fs.readFileSync(out)).digest('hex');
  fs.rmSync(out);
  return h;
}

/**
 * Repairs two copies, one with qemu-img check -r, one with checkImage: the results agree, and
 * after ours qemu-img check agrees with qemu-img's own repair (clean where QEMU's is). Returns
 * qemu-img's result after repair.
 */
async function repairAgrees(image: string, mode: 'leaks' | 'all', opts: { sameData?: boolean; sameLayout?: boolean } = {}) {
  const before = opts.sameData ? rawHash(image) : undefined;
  const theirs = p('theirs.qcow2');
  const mine = p('mine.qcow2');
  fs.copyFileSync(image, theirs);
  fs.copyFileSync(image, mine);
  const q = qemuCheck(theirs, mode);
  const ours = await checkImage(mine, { repair: mode });
  if (q.code === 1) expect(ours.checkErrors).toBeGreaterThan(0);
  else expect(countsOf(ours)).toEqual(q.counts);
  const after = qemuCheck(mine);
  const theirsAfter = qemuCheck(theirs).counts;
  if (opts.sameLayout === false) {
    // QEMU also rewrote something the check does not touch: compare only what is wrong
    const problems = (c: Record<string, number>) => [c.corruptions, c.leaks, c.checkErrors];
    expect(problems(after.counts)).toEqual(problems(theirsAfter));
  } else expect(after.counts).toEqual(theirsAfter);
  if (before) expect(rawHash(mine)).toBe(before);
  return after.counts;
}

/** Appends a cluster nothing uses and gives it refcount 1: one leak. */
function addLeakedCluster(img: string): void {
  const q = new Qcow2Patcher(img);
  const cluster = Math.ceil(q.buf.length / q.clusterSize);
  q.setRefcount(cluster, 1);
  q.save();
  fs.truncateSync(img, (cluster + 1) * q.clusterSize);
}

const clean = (c: Record<string, number>) => expect([c.corruptions, c.leaks, c.checkErrors]).toEqual([0, 0, 0]);

const WRITES = ['write -P 0xab 0 64k', 'write -P 0x11 100k 3k', 'write -z 256k 128k', 'write -P 0x22 1M 512k', 'discard 1152k 64k', 'write -P 0x33 2047k 1k'];

describe.skipIf(!available)('checkImage agrees with qemu-img check on clean images', () => {
  const kinds: [string, string[]][] = [
    ['v2 (compat=0.10)', ['-o', 'compat=0.10']],
    ['v3', []],
    ['refcount_bits=1', ['-o', 'refcount_bits=1']],
    ['refcount_bits=64', ['-o', 'refcount_bits=64']],
    ['extended L2', ['-o', 'extended_l2=on']],
    ['512-byte clusters', ['-o', 'cluster_size=512']],
    ['2 MiB clusters', ['-o', 'cluster_size=2M']],
    ['lazy refcounts', ['-o', 'lazy_refcounts=on']],
  ];
  for (const [name, opts] of kinds) {
    it(`${name} after writes and discards`, async () => {
      const img = p('clean.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', ...opts, img, '3M');
      qemuIo(img, WRITES);
      clean(await agrees(img));
    });
  }

  it('compressed clusters (qemu-img convert -c), some spanning two host clusters', async () => {
    const src = p('src.raw');
    const data = Buffer.alloc(4 << 20);
    for (let i = 0; i < data.length; i += 4096) data.fill(i % 251, i, i + 1000); // compressible, varied
    fs.writeFileSync(src, data);
    for (const cs of ['4k', '64k']) {
      const img = p(`z-${cs}.qcow2`);
      qemuImg('convert', '-q', '-c', '-O', 'qcow2', '-o', `cluster_size=${cs}`, src, img);
      const c = await agrees(img);
      clean(c);
      expect(c.compressedClusters).toBeGreaterThan(0);
    }
  });

  it('internal snapshots share clusters (refcounts above 1, COPIED cleared)', async () => {
    const img = p('snap.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '3M');
    qemuIo(img, WRITES);
    qemuImg('snapshot', '-c', 's1', img);
    qemuIo(img, ['write -P 0x44 0 128k', 'discard 1M 64k']);
    qemuImg('snapshot', '-c', 's2', img);
    qemuIo(img, ['write -P 0x55 64k 64k']);
    clean(await agrees(img));
  });

  it('a backing file and an external data file', async () => {
    const base = p('base.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '3M');
    qemuIo(base, WRITES);
    const over = p('over.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', over);
    qemuIo(over, ['write -P 0x66 512k 128k']);
    clean(await agrees(over));
    const ext = p('ext.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${p('ext.data')}`, ext, '3M');
    qemuIo(ext, WRITES);
    clean(await agrees(ext));
  });

  it('persistent bitmaps', async () => {
    const img = p('bitmaps.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '3M');
    qemuImg('bitmap', '--add', img, 'b0');
    qemuIo(img, WRITES);
    qemuImg('bitmap', '--add', '-g', '512', img, 'b1');
    clean(await agrees(img));
    // a leak in an image with bitmaps: repaired without touching the bitmaps
    addLeakedCluster(img);
    expect((await agrees(img)).leaks).toBe(1);
    // (qemu-img check -r also stores the bitmaps again when it closes the image: new tables, new end offset)
    clean(await repairAgrees(img, 'all', { sameData: true, sameLayout: false }));
  });

  it('the checked-in fixtures', async () => {
    const fixtures = path.join(import.meta.dirname, '../fixtures/qcow2');
    for (const f of fs.readdirSync(fixtures).filter((n) => n.endsWith('.qcow2'))) {
      fs.copyFileSync(path.join(fixtures, f), p(f));
    }
    for (const f of fs.readdirSync(fixtures).filter((n) => n.endsWith('.qcow2'))) await agrees(p(f));
  });

  it('raw images have no checks (ENOTSUP), as qemu-img says with exit code 63', async () => {
    const raw = p('plain.raw');
    fs.writeFileSync(raw, Buffer.alloc(65536));
    expect(qemuCheck(raw).code).toBe(63);
    await expect(checkImage(raw)).rejects.toMatchObject({ code: 'ENOTSUP' });
  });
});

/** A 3 MiB v3 image with 64 KiB clusters and some data, to break. */
function sample(name: string): string {
  const img = p(name);
  qemuImg('create', '-q', '-f', 'qcow2', img, '3M');
  qemuIo(img, ['write -P 0xab 0 192k', 'write -P 0x22 1M 128k']);
  return img;
}

describe.skipIf(!available)('leaks and corruptions: counted and repaired like qemu-img', () => {
  it('a leaked cluster (refcount raised on a cluster nothing uses)', async () => {
    const img = sample('leak.qcow2');
    addLeakedCluster(img);
    const c = await agrees(img);
    expect(c.leaks).toBe(1);
    expect(c.corruptions).toBe(0);
    clean(await repairAgrees(img, 'leaks', { sameData: true }));
    clean(await repairAgrees(img, 'all', { sameData: true }));
  });

  it('a refcount raised on a used cluster: a leak and a COPIED mismatch', async () => {
    const img = sample('leak2.qcow2');
    const q = new Qcow2Patcher(img);
    const data = Number(q.l2Entry(1) & OFFSET_MASK) / q.clusterSize;
    q.setRefcount(data, 2);
    q.save();
    const c = await agrees(img);
    expect(c.leaks).toBe(1);
    expect(c.corruptions).toBe(1);
    await repairAgrees(img, 'leaks', { sameData: true });
    clean(await repairAgrees(img, 'all', { sameData: true }));
  });

  it('a used cluster with refcount 0 needs a rebuilt refcount structure', async () => {
    const img = sample('zero.qcow2');
    const q = new Qcow2Patcher(img);
    const data = Number(q.l2Entry(2) & OFFSET_MASK) / q.clusterSize;
    q.setRefcount(data, 0);
    q.save();
    const c = await agrees(img);
    expect(c.corruptions).toBe(2); // refcount too low, and COPIED without refcount 1
    await repairAgrees(img, 'leaks');
    clean(await repairAgrees(img, 'all', { sameData: true }));
  });

  it('an L2 entry pointing past the end of the file', async () => {
    const img = sample('past.qcow2');
    const q = new Qcow2Patcher(img);
    q.setL2Entry(5, COPIED | BigInt(q.buf.length + 16 * q.clusterSize));
    q.save();
    const c = await agrees(img);
    expect(c.corruptions).toBeGreaterThan(0);
    await repairAgrees(img, 'leaks');
    await repairAgrees(img, 'all');
  });

  it('two L2 entries sharing one cluster with refcount 1', async () => {
    const img = sample('shared.qcow2');
    const q = new Qcow2Patcher(img);
    q.setL2Entry(7, q.l2Entry(0));
    q.save();
    const c = await agrees(img);
    expect(c.corruptions).toBe(1);
    await repairAgrees(img, 'leaks');
    clean(await repairAgrees(img, 'all', { sameData: true }));
  });

  it('COPIED flags cleared on a data cluster and an L2 table with refcount 1 (repaired even by leaks-only repair)', async () => {
    const img = sample('copied.qcow2');
    const q = new Qcow2Patcher(img);
    q.setL2Entry(0, q.l2Entry(0) & ~COPIED);
    const l1 = Number(q.buf.readBigUInt64BE(40));
    q.buf.writeBigUInt64BE(q.buf.readBigUInt64BE(l1) & ~COPIED, l1);
    q.save();
    const c = await agrees(img);
    expect(c.corruptions).toBe(2);
    await repairAgrees(img, 'leaks');
    clean(await repairAgrees(img, 'all', { sameData: true }));
  });

  it('a refcount block overlapping a data cluster', async () => {
    const img = sample('overlap.qcow2');
    const q = new Qcow2Patcher(img);
    const reftable = Number(q.buf.readBigUInt64BE(48));
    // the refcount table's first entry now names a data cluster
    q.buf.writeBigUInt64BE(q.l2Entry(0) & OFFSET_MASK, reftable);
    q.save();
    const c = await agrees(img);
    expect(c.corruptions).toBeGreaterThan(0);
    await repairAgrees(img, 'leaks');
    clean(await repairAgrees(img, 'all', { sameData: true }));
  });
});

describe.skipIf(!available)('more findings of QEMU\'s check, counted and repaired alike', () => {
  const l1 = (q: Qcow2Patcher) => Number(q.buf.readBigUInt64BE(40));
  const reftable = (q: Qcow2Patcher) => Number(q.buf.readBigUInt64BE(48));
  const cases: [string, (q: Qcow2Patcher) => void, { compressed?: boolean; sameData?: boolean }][] = [
    ['an L2 entry with reserved bits', (q) => q.setL2Entry(1, q.l2Entry(1) | 2n), { sameData: true }],
    ['an unaligned data cluster offset', (q) => q.setL2Entry(1, q.l2Entry(1) + 0x200n), {}],
    ['an L1 entry with reserved bits', (q) => q.buf.writeBigUInt64BE(q.buf.readBigUInt64BE(l1(q)) | 1n, l1(q)), { sameData: true }],
    ['COPIED on a compressed cluster', (q) => q.setL2Entry(0, q.l2Entry(0) | COPIED), { compressed: true, sameData: true }],
    ['a preallocated zero cluster sharing a data cluster', (q) => q.setL2Entry(9, COPIED | (q.l2Entry(0) & OFFSET_MASK) | 1n), {}],
    ['an unaligned preallocated zero cluster (repaired into a plain zero cluster)', (q) => q.setL2Entry(9, COPIED | 0x50200n | 1n), {}],
    ['an L1 entry pointing to an unaligned L2 table', (q) => q.buf.writeBigUInt64BE(q.buf.readBigUInt64BE(l1(q)) + 0x200n, l1(q)), {}],
    ['a refcount block outside the image (the file is grown to reach it)', (q) => q.buf.writeBigUInt64BE(0x7fff0000n, reftable(q) + 8), { sameData: true }],
  ];
  for (const [name, patch, opts] of cases) {
    it(name, async () => {
      let img = sample('more.qcow2');
      if (opts.compressed) {
        qemuImg('convert', '-q', '-c', '-O', 'qcow2', img, p('more-z.qcow2'));
        img = p('more-z.qcow2');
      }
      const q = new Qcow2Patcher(img);
      patch(q);
      q.save();
      expect((await agrees(img)).corruptions).toBeGreaterThan(0);
      await repairAgrees(img, 'leaks', { sameData: opts.sameData });
      await repairAgrees(img, 'all', { sameData: opts.sameData });
    });
  }

  it('a refcount table entry with reserved bits: counted alike; our rebuild repairs it (qemu-img 7.2 fails on its own overlap check)', async () => {
    const img = sample('reft-reserved.qcow2');
    const q = new Qcow2Patcher(img);
    q.buf.writeBigUInt64BE(q.buf.readBigUInt64BE(reftable(q)) | 1n, reftable(q));
    q.save();
    const c = await agrees(img);
    expect([c.corruptions, c.leaks]).toEqual([1, 1]);
    const before = rawHash(img);
    const r = await checkImage(img, { repair: 'all' });
    expect([r.corruptions, r.leaks, r.corruptionsFixed, r.leaksFixed]).toEqual([0, 0, 1, 1]);
    clean(qemuCheck(img).counts);
    expect(rawHash(img)).toBe(before);
  });
});

describe.skipIf(!available)('refcount structure lost (refcount table entry 0 cleared): rebuilt like QEMU for every layout', () => {
  const kinds: [string, string[], string[]][] = [
    ['refcount_bits=1', ['-o', 'refcount_bits=1'], []],
    ['refcount_bits=64', ['-o', 'refcount_bits=64'], []],
    ['512-byte clusters', ['-o', 'cluster_size=512'], []],
    ['extended L2', ['-o', 'extended_l2=on'], []],
    ['v2', ['-o', 'compat=0.10'], []],
    ['internal snapshots', [], ['s1']],
  ];
  for (const [name, opts, snaps] of kinds) {
    it(name, async () => {
      const img = p('lost.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', ...opts, img, '3M');
      qemuIo(img, WRITES);
      for (const s of snaps) {
        qemuImg('snapshot', '-c', s, img);
        qemuIo(img, ['write -P 0x77 0 96k']);
      }
      const q = new Qcow2Patcher(img);
      q.buf.writeBigUInt64BE(0n, Number(q.buf.readBigUInt64BE(48)));
      q.save();
      const c = await agrees(img);
      expect(c.corruptions).toBeGreaterThan(0);
      clean(await repairAgrees(img, 'all', { sameData: true }));
    });
  }
});

describe.skipIf(!available)('dirty images (lazy refcounts, killed writer): repairRefcounts does what QEMU does on open', () => {
  function dirtyImage(name: string): string {
    const img = p(name);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', img, '3M');
    // qemu-io killed before it closes the image: refcounts were never written, the dirty bit stays
    spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 192k', '-c', 'write -P 0x22 1M 128k', '-c', 'sigraise 9', img], { cwd: dir });
    return img;
  }

  it('the check agrees with qemu-img; the repair leaves an image qemu-img finds clean, same data, dirty bit cleared', async () => {
    const img = dirtyImage('dirty.qcow2');
    expect(fs.readFileSync(img).readUInt32BE(76) & 1).toBe(1);
    const c = await agrees(img);
    expect(c.corruptions).toBeGreaterThan(0);
    const before = rawHash(img);
    const theirs = p('dirty-theirs.qcow2');
    fs.copyFileSync(img, theirs);
    const q = qemuCheck(theirs, 'all');
    const layer = new BlockLayer();
    const file = await layer.openNode({ driver: 'file', filename: img });
    let r: CheckResult;
    try {
      r = await repairRefcounts(file, { filename: img });
    } finally {
      await file.unref();
      await layer.close();
    }
    expect([r.corruptionsFixed, r.leaksFixed]).toEqual([q.counts.corruptionsFixed, q.counts.leaksFixed]);
    clean(qemuCheck(img).counts);
    expect(qemuCheck(img).counts).toEqual(qemuCheck(theirs).counts);
    expect(fs.readFileSync(img).readUInt32BE(76) & 1).toBe(0);
    expect(rawHash(img)).toBe(before);
  });

  it('checkImage takes node options as well as a path', async () => {
    const img = dirtyImage('dirty-opts.qcow2');
    const byPath = await checkImage(img);
    const byOptions = await checkImage({ driver: 'qcow2', file: { driver: 'file', filename: img } });
    expect(countsOf(byOptions)).toEqual(countsOf(byPath));
  });

  it('a repair takes the write lock: it fails while another process holds the image', async () => {
    const img = sample('locked.qcow2');
    const layer = new BlockLayer();
    const holder = await layer.openNode({ driver: 'file', filename: img });
    try {
      await expect(checkImage(img, { repair: 'all' })).rejects.toMatchObject({ code: 'ELOCKED' });
    } finally {
      await holder.unref();
      await layer.close();
    }
  });
});

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// Each CLI run starts tsx: slow on a loaded machine.
describe.skipIf(!available)('blocklayer check prints and exits like qemu-img check', { timeout: 180_000 }, () => {
  it('the same text, JSON and exit code for a clean, a leaking and a corrupt image, and for raw (63)', () => {
    const good = sample('cli-good.qcow2');
    const leaky = sample('cli-leak.qcow2');
    addLeakedCluster(leaky);
    const bad = sample('cli-bad.qcow2');
    const b = new Qcow2Patcher(bad);
    b.setL2Entry(7, b.l2Entry(0));
    b.save();
    const raw = p('cli.raw');
    fs.writeFileSync(raw, Buffer.alloc(4096));
    for (const [img, code] of [
      [good, 0],
      [leaky, 3],
      [bad, 2],
    ] as const) {
      const theirs = spawnSync('qemu-img', ['check', img], { encoding: 'utf8' });
      const ours = cli('check', img);
      expect([ours.code, theirs.status]).toEqual([code, code]);
      expect(ours.stdout).toBe(theirs.stdout);
      const theirsJson = spawnSync('qemu-img', ['check', '--output=json', img], { encoding: 'utf8' });
      expect(JSON.parse(cli('check', '--json', img).stdout)).toEqual(JSON.parse(theirsJson.stdout));
    }
    const r = cli('check', raw);
    expect(r.code).toBe(63);
    expect(r.stderr).toContain('This image format does not support checks');
  });

  it('--repair leaks then all: prints what was repaired and exits 0', () => {
    const img = sample('cli-repair.qcow2');
    const q = new Qcow2Patcher(img);
    q.setL2Entry(7, q.l2Entry(0));
    q.save();
    addLeakedCluster(img);
    const leaks = cli('check', '--repair', 'leaks', img);
    expect(leaks.code).toBe(2); // the shared cluster is a corruption: leaks-only repair leaves it
    expect(leaks.stdout).toContain('    1 leaked clusters\n    0 corruptions');
    const all = cli('check', '-r', 'all', img);
    expect(all.code).toBe(0);
    expect(all.stdout).toContain('Double checking the fixed image now...\nNo errors were found on the image.');
    expect(spawnSync('qemu-img', ['check', img]).status).toBe(0);
  });
});
