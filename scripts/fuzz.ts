/**
 * Fuzzer of blocklayer's input surfaces: images (mutants of seeds made with qemu-img; see fuzz-formats.ts),
 * hostile option trees for BlockLayer.openDrive/openNode, and the option parsers' string inputs.
 *
 *   npx tsx scripts/fuzz.ts --seconds 600 [--seed N] [--out DIR]   (DIR default: $TMPDIR/blocklayer-fuzz-out)
 *   node --expose-gc --import tsx scripts/fuzz.ts --seconds 600   (RSS sampled after global.gc())
 *
 * A supervisor process runs the fuzz loop in a child and restarts it if it dies (crash) or stops
 * answering (hang in synchronous code); the input of the case in flight is saved as the finding.
 * Findings (anything but a BlockError, a node's range guard refusing a driver's own request, unhandled rejections, cases over 1 s (half of it CPU time), RSS growth) go to
 * --out, one directory per (kind, error class, message pattern, top stack frame).
 */
import { execFileSync, fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { VirtualClock } from '../src/clock.js';
import { BlockError } from '../src/errors.js';
import { BlockLayer, openImage } from '../src/layer.js';
import { parseDriveString } from '../src/options/drive-string.js';
import { fromLibvirtIotune, parseIotuneXml } from '../src/options/libvirt.js';
import { parseBlockSetIoThrottle } from '../src/options/qmp.js';
import { parseThrottleGroupObject } from '../src/options/qom.js';
import type { Drive } from '../src/drive.js';
import { Rng, withTimeout } from './fuzz-util.js';
import { bitmapOffsets, COMPANIONS, embeddedDescriptor, FORMAT_SEEDS, makeFormatCorpus, mutateText, toolOp, writeOps, bitmapOps } from './fuzz-formats.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '600' },
    seed: { type: 'string' },
    out: { type: 'string', default: path.join(os.tmpdir(), 'blocklayer-fuzz-out') },
    child: { type: 'boolean', default: false },
    corpus: { type: 'string' },
  },
});

const SLOW_MS = 1000;
/** Messages of BlockNode's request guards (node names start with '#'). */
const INTERNAL_GUARD = /must be non-negative safe integers|is beyond the end of #/;
const HANG_MS = 10_000;
const WATCHDOG_MS = 60_000;
const RSS_EVERY = 200;
const RSS_BOUND = 64 * 1024 * 1024;
const READ_CAP = 64 * 1024 * 1024;
const CHUNK = 1024 * 1024;

type Kind = 'image' | 'options' | 'parser';
type FindingKind = 'error' | 'guard' | 'unhandled' | 'slow' | 'hang' | 'crash' | 'rss';

interface Stats {
  image: number;
  options: number;
  parser: number;
  findings: Record<string, number>;
  newFindings: string[];
  rss: number[];
  /** How cases ended: "image:ok", "image:open:ECORRUPT", "options:open:EINVAL", … */
  outcomes: Record<string, number>;
  /** One message for each outcome of a rare error code (EIO, ENOENT, EACCES, EBUSY, ELOCKED; every code with FUZZ_SAMPLES=all), to triage. */
  samples: Record<string, string>;
}

// ---------------------------------------------------------------- supervisor

async function supervise(): Promise<void> {
  const out = path.resolve(args.out!);
  fs.mkdirSync(out, { recursive: true });
  const seconds = Number(args.seconds);
  let seed = args.seed !== undefined ? Number(args.seed) : (Date.now() & 0x7fffffff);
  const corpus = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-fuzz-'));
  await makeCorpus(corpus);
  const deadline = Date.now() + seconds * 1000;
  console.log(`fuzz: seed ${seed}, ${seconds} s, corpus ${corpus}, findings in ${out}`);
  const totals: Stats = { image: 0, options: 0, parser: 0, findings: {}, newFindings: [], rss: [], outcomes: {}, samples: {} };
  const start = Date.now();
  const here = fileURLToPath(import.meta.url);
  const execArgv = process.execArgv.includes('--expose-gc') ? process.execArgv : [...process.execArgv, '--expose-gc'];
  let restarts = 0;
  while (Date.now() < deadline - 1000) {
    const left = Math.ceil((deadline - Date.now()) / 1000);
    const child = fork(here, ['--child', '--seconds', String(left), '--seed', String(seed), '--out', out, '--corpus', corpus], { execArgv, stdio: 'inherit' });
    let last: Stats | undefined;
    let beat = Date.now();
    child.on('message', (m: { stats?: Stats }) => {
      beat = Date.now();
      if (m.stats) last = m.stats;
    });
    const watchdog = setInterval(() => {
      if (Date.now() - beat > WATCHDOG_MS) {
        console.log(`fuzz: child silent for ${WATCHDOG_MS} ms: killing it (hang)`);
        child.kill('SIGKILL');
      }
    }, 1000);
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })),
    );
    clearInterval(watchdog);
    if (last) {
      totals.image += last.image;
      totals.options += last.options;
      totals.parser += last.parser;
      for (const [k, v] of Object.entries(last.findings)) totals.findings[k] = (totals.findings[k] ?? 0) + v;
      totals.newFindings.push(...last.newFindings);
      totals.rss.push(...last.rss);
      for (const [k, v] of Object.entries(last.outcomes)) totals.outcomes[k] = (totals.outcomes[k] ?? 0) + v;
      Object.assign(totals.samples, last.samples);
    }
    if (code === 0) break;
    // The child died or hung: the case in flight is the finding.
    const kind: FindingKind = signal === 'SIGKILL' && Date.now() - beat > WATCHDOG_MS ? 'hang' : 'crash';
    const current = path.join(out, '.current');
    if (fs.existsSync(current)) {
      const desc = JSON.parse(fs.readFileSync(current, 'utf8')) as { kind: Kind; input: string; label: string; files?: CaseFiles };
      const key = `${kind}|${desc.kind}|${code ?? signal}`;
      const dir = saveFinding(out, kind, key, `${kind} (exit ${code ?? signal}) during ${desc.label}`, desc.kind, fs.readFileSync(desc.input), '', desc.files);
      if (dir) totals.newFindings.push(dir);
      totals.findings[kind] = (totals.findings[kind] ?? 0) + 1;
    }
    restarts++;
    seed = (seed + 0x9e3779b9) >>> 0;
    if (restarts > 50) {
      console.log('fuzz: too many restarts, stopping');
      break;
    }
  }
  fs.rmSync(corpus, { recursive: true, force: true });
  const elapsed = (Date.now() - start) / 1000;
  const cases = totals.image + totals.options + totals.parser;
  console.log('\n==== fuzz summary ====');
  console.log(`time: ${elapsed.toFixed(0)} s, child restarts: ${restarts}`);
  console.log(`cases: ${cases} (images ${totals.image}, option trees ${totals.options}, parser strings ${totals.parser}), ${(cases / elapsed).toFixed(1)} cases/s`);
  console.log(`findings (occurrences by kind): ${JSON.stringify(totals.findings)}`);
  console.log(`outcomes: ${JSON.stringify(Object.fromEntries(Object.entries(totals.outcomes).sort()))}`);
  for (const [k, m] of Object.entries(totals.samples)) console.log(`  e.g. ${k}: ${m}`);
  console.log(`distinct new findings: ${totals.newFindings.length}`);
  for (const f of totals.newFindings) console.log(`  ${f}`);
  if (totals.rss.length > 0) console.log(`rss samples (MiB, after gc every ${RSS_EVERY} cases): ${totals.rss.map((r) => (r / 2 ** 20).toFixed(0)).join(' ')}`);
}

// ---------------------------------------------------------------- corpus

interface Seed {
  name: string;
  bytes: Buffer;
  /** Snapshot names to open, if any. */
  snapshots?: string[];
  /** The file opened, when not the one mutated (a vmdk extent is mutated, its descriptor opened). */
  open?: string;
  /** Files of the corpus copied beside the mutant (a base, extents, a data file). */
  companions?: string[];
  /** The mutated file is text (a vmdk descriptor). */
  text?: boolean;
}

async function makeCorpus(dir: string): Promise<void> {
  const img = (...a: string[]) => execFileSync('qemu-img', a, { cwd: dir, stdio: 'pipe' });
  const io = (file: string, ...cmds: string[]) => execFileSync('qemu-io', [...cmds.flatMap((c) => ['-c', c]), file], { cwd: dir, stdio: 'pipe' });
  const q = (name: string, size: string, opts: string) => img('create', '-q', '-f', 'qcow2', '-o', opts, name, size);
  q('v2.qcow2', '1M', 'compat=0.10');
  io('v2.qcow2', 'write -P 0xab 0 64k', 'write -P 0x11 512k 4k');
  q('v3-512.qcow2', '256k', 'cluster_size=512');
  io('v3-512.qcow2', 'write -P 0xab 0 4k', 'write -z 8k 4k', 'write -P 0x22 100k 1k');
  q('v3-64k.qcow2', '4M', 'cluster_size=65536');
  io('v3-64k.qcow2', 'write -P 0xab 0 64k', 'write -z 1M 64k', 'write -P 0x33 3M 8k');
  q('v3-2m.qcow2', '8M', 'cluster_size=2M');
  io('v3-2m.qcow2', 'write -P 0xab 0 64k', 'write -P 0x44 5M 4k');
  fs.writeFileSync(path.join(dir, 'src.raw'), Buffer.alloc(512 * 1024));
  io('src.raw', 'write -P 0xab 0 64k', 'write -P 0x55 256k 128k');
  img('convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', 'src.raw', 'zlib.qcow2');
  img('convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', 'src.raw', 'zstd.qcow2');
  q('l2ext.qcow2', '1M', 'extended_l2=on,cluster_size=65536');
  io('l2ext.qcow2', 'write -P 0xab 0 4k', 'write -P 0x66 8k 2k', 'write -z 64k 8k');
  q('base.qcow2', '1M', 'cluster_size=65536');
  io('base.qcow2', 'write -P 0xab 0 128k');
  img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'overlay.qcow2', '1M');
  io('overlay.qcow2', 'write -P 0x77 64k 4k');
  q('snap.qcow2', '1M', 'cluster_size=65536');
  io('snap.qcow2', 'write -P 0xab 0 64k');
  img('snapshot', '-q', '-c', 'first', 'snap.qcow2');
  io('snap.qcow2', 'write -P 0x88 0 4k');
  q('datafile.qcow2', '1M', 'data_file=datafile.data');
  io('datafile.qcow2', 'write -P 0xab 0 64k');
  // The other formats (#25): each subformat qemu-img makes, with scattered data and zeroes.
  const other = (name: string, fmt: string, size: string, opts: string[], ...cmds: string[]) => {
    img('create', '-q', '-f', fmt, ...opts, name, size);
    execFileSync('qemu-io', ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), name], { cwd: dir, stdio: 'pipe' });
  };
  other('dynamic.vpc', 'vpc', '8M', [], 'write -P 0xab 0 64k', 'write -P 0x12 3M 4k');
  other('fixed.vpc', 'vpc', '1M', ['-o', 'subformat=fixed'], 'write -P 0xab 4k 8k');
  other('dynamic.vhdx', 'vhdx', '8M', ['-o', 'block_size=1M,log_size=1M'], 'write -P 0xab 0 64k', 'write -z 2M 1M', 'write -P 0x13 5M 4k');
  other('dynamic.vdi', 'vdi', '4M', [], 'write -P 0xab 0 64k', 'write -P 0x14 2M 4k');
  other('static.vdi', 'vdi', '2M', ['-o', 'static=on'], 'write -P 0xab 1M 4k');
  other('sparse.vmdk', 'vmdk', '8M', [], 'write -P 0xab 0 64k', 'write -P 0x15 5M 4k');
  img('convert', '-q', '-f', 'vmdk', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'sparse.vmdk', 'stream.vmdk');
  fs.writeFileSync(path.join(dir, 'plain.raw'), Buffer.alloc(128 * 1024, 0xab));
  fs.writeFileSync(path.join(dir, 'options-target.raw'), Buffer.alloc(64 * 1024, 0x5a));
  await makeFormatCorpus(dir);
}

function loadSeeds(dir: string): Seed[] {
  const names = ['v2.qcow2', 'v3-512.qcow2', 'v3-64k.qcow2', 'v3-2m.qcow2', 'zlib.qcow2', 'zstd.qcow2', 'l2ext.qcow2', 'overlay.qcow2', 'base.qcow2', 'snap.qcow2', 'datafile.qcow2', 'plain.raw', ...OTHER_SEEDS];
  const seeds: Seed[] = names.map((name) => ({ name, bytes: fs.readFileSync(path.join(dir, name)), snapshots: name === 'snap.qcow2' ? ['first', '1'] : undefined, companions: COMPANIONS[name] }));
  for (const f of FORMAT_SEEDS) seeds.push({ ...f, bytes: fs.readFileSync(path.join(dir, f.name)) });
  return seeds;
}

/** Seeds of the other formats, by file name; the extension names the driver. */
const OTHER_SEEDS = ['dynamic.vpc', 'fixed.vpc', 'dynamic.vhdx', 'dynamic.vdi', 'static.vdi', 'sparse.vmdk', 'stream.vmdk'];

/** The format a seed is in (its extension). */
const seedFormat = (name: string) => name.slice(name.lastIndexOf('.') + 1);

/** Regions of a non-qcow2 image where its metadata lives (headers, tables), for targeted mutations. */
function metadataRegions(b: Buffer): [number, number][] {
  const fmt = b.subarray(0, 8).toString('latin1');
  if (fmt === 'vhdxfile') return [[0x10000, 0x11000], [0x20000, 0x21000], [0x30000, 0x30100], [0x40000, 0x40100], [0x100000, 0x100200], [0x200000, 0x210000]];
  if (fmt === 'conectix') return [[0, 512], [512, 1536], [1536, 2048], [Math.max(0, b.length - 512), b.length]];
  if (b.length >= 0x44 && b.readUInt32LE(0x40) === 0xbeda107f) return [[0, 512], [512, 1024]];
  if (fmt.startsWith('KDMV')) return [[0, 512], [512, 2048], [2048, 8192], [Math.max(0, b.length - 1536), b.length]];
  return [[Math.max(0, b.length - 512), b.length]];
}

// ---------------------------------------------------------------- image mutation

const BYTE_VALUES = [0, 1, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x20, 0x10] as const;
const U32_VALUES = [0, 1, 2, 7, 8, 9, 12, 16, 21, 22, 31, 32, 63, 64, 0x7f, 0x80, 0xff, 0x100, 0x200, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
/** Header fields (offset, width) of qcow2 v2/v3. */
const HEADER_FIELDS: [number, 1 | 4 | 8][] = [
  [4, 4], [8, 8], [16, 4], [20, 4], [24, 8], [32, 4], [36, 4], [40, 8], [48, 8], [56, 4], [60, 4], [64, 8],
  [72, 8], [80, 8], [88, 8], [96, 4], [100, 4], [104, 1], [105, 1], [112, 4], [116, 4],
];

function u64Values(rng: Rng, fileSize: number, cluster: number): bigint[] {
  const near = BigInt(Math.max(0, fileSize - cluster + rng.int(2 * cluster)));
  return [
    0n, 1n, 0x200n, 0x10000n, BigInt(cluster), BigInt(fileSize), BigInt(fileSize + cluster), near, near & ~0x1ffn,
    0x7fffffffn, 0xffffffffn, 0x100000000n, 1n << 53n, (1n << 53n) - 512n, (1n << 56n) - 1n, 1n << 62n, 1n << 63n,
    0xffffffffffffffffn, 0x7fffffffffffffffn, (1n << 63n) | BigInt(cluster), (1n << 62n) | near, (1n << 62n) | BigInt(cluster * 3),
    BigInt(rng.u32()) | (BigInt(rng.u32()) << 32n), BigInt(rng.u32()),
  ];
}

function rd64(b: Buffer, at: number): bigint {
  return at + 8 <= b.length ? b.readBigUInt64BE(at) : 0n;
}

/** Offsets of interesting metadata entries of a qcow2 image (L1, L2, refcount table and blocks, snapshot table). */
function tableOffsets(b: Buffer): number[] {
  if (b.length < 104 || b.readUInt32BE(0) !== 0x514649fb) return [];
  const out: number[] = bitmapOffsets(b);
  const cb = b.readUInt32BE(20);
  const cluster = cb >= 9 && cb <= 21 ? 2 ** cb : 65536;
  const l1 = Number(rd64(b, 40) & 0xffffffffffffffn);
  const l1Size = b.readUInt32BE(36);
  for (let i = 0; i < Math.min(l1Size, 16); i++) {
    const at = l1 + i * 8;
    if (at + 8 > b.length) break;
    out.push(at);
    const l2 = Number(rd64(b, at) & 0xfffffffffffe00n);
    if (l2 > 0 && l2 < b.length) for (let j = 0; j < 64 && l2 + j * 8 + 8 <= b.length; j++) out.push(l2 + j * 8);
  }
  const rt = Number(rd64(b, 48) & 0xffffffffffffffn);
  for (let i = 0; i < 8 && rt + i * 8 + 8 <= b.length; i++) {
    out.push(rt + i * 8);
    const blk = Number(rd64(b, rt + i * 8) & 0xfffffffffffe00n);
    if (blk > 0 && blk < b.length) for (let j = 0; j < 16 && blk + j * 2 + 8 <= b.length; j++) out.push(blk + j * 2);
  }
  const snaps = Number(rd64(b, 64) & 0xffffffffffffffn);
  if (snaps > 0) for (let i = 0; i < 64 && snaps + i * 4 + 8 <= b.length; i++) out.push(snaps + i * 4);
  // header extensions region (just after the header)
  const hl = b.readUInt32BE(4) === 3 && b.length >= 104 ? b.readUInt32BE(100) : 72;
  for (let i = 0; i < 32 && hl + i * 4 + 8 <= Math.min(b.length, cluster); i++) out.push(hl + i * 4);
  return out;
}

function mutate(rng: Rng, seed: Buffer, text = false): { bytes: Buffer; ops: string[] } {
  if (text) return mutateText(rng, seed);
  const desc = embeddedDescriptor(seed);
  if (desc && rng.chance(0.3)) {
    // a sparse vmdk's embedded descriptor, as text, in the same sectors
    const [at, size] = desc;
    const { bytes: t, ops } = mutateText(rng, Buffer.from(seed.subarray(at, at + size).toString('latin1').replace(/\0+$/, ''), 'latin1'));
    const b = Buffer.from(seed);
    b.fill(0, at, at + size);
    t.copy(b, at, 0, Math.min(t.length, size));
    return { bytes: b, ops: ops.map((o) => `desc ${o}`) };
  }
  let b = Buffer.from(seed);
  const ops: string[] = [];
  const n = 1 + rng.int(rng.chance(0.7) ? 3 : 10);
  const cb = b.length >= 24 ? b.readUInt32BE(20) : 16;
  const cluster = cb >= 9 && cb <= 21 ? 2 ** cb : 65536;
  for (let i = 0; i < n; i++) {
    let tables = tableOffsets(b);
    if (tables.length === 0 && b.length > 0) {
      // not qcow2: offsets inside the format's metadata regions, 4-byte aligned as most fields are
      tables = metadataRegions(b).flatMap(([from, to]) => Array.from({ length: 16 }, () => Math.min(b.length - 1, from + (rng.int(Math.max(1, to - from)) & ~3))));
    }
    const op = rng.int(100);
    const anywhere = () => (rng.chance(0.5) ? rng.int(Math.min(b.length, 512)) : rng.int(b.length));
    if (b.length === 0) break;
    if (op < 15) {
      const at = anywhere();
      const bit = rng.int(8);
      b[at] ^= 1 << bit;
      ops.push(`flip ${at}.${bit}`);
    } else if (op < 28) {
      const at = tables.length > 0 && rng.chance(0.5) ? rng.pick(tables) + rng.int(8) : anywhere();
      if (at >= b.length) continue;
      const v = rng.pick(BYTE_VALUES);
      b[at] = v;
      ops.push(`byte ${at}=${v}`);
    } else if (op < 50) {
      const [at, w] = rng.pick(HEADER_FIELDS);
      if (at + w > b.length) continue;
      if (w === 1) b[at] = rng.pick(BYTE_VALUES);
      else if (w === 4) b.writeUInt32BE(rng.chance(0.8) ? rng.pick(U32_VALUES) : rng.u32(), at);
      else b.writeBigUInt64BE(rng.pick(u64Values(rng, b.length, cluster)), at);
      ops.push(`header ${at}/${w}`);
    } else if (op < 80) {
      if (tables.length === 0) continue;
      const at = rng.pick(tables);
      if (rng.chance(0.7) && at + 8 <= b.length) b.writeBigUInt64BE(rng.pick(u64Values(rng, b.length, cluster)), at);
      else if (at + 4 <= b.length) b.writeUInt32BE(rng.pick(U32_VALUES), at);
      ops.push(`table ${at}`);
    } else if (op < 86) {
      const len = rng.chance(0.5) ? rng.int(b.length) : Math.max(0, b.length - 1 - rng.int(cluster));
      b = b.subarray(0, len);
      ops.push(`truncate ${len}`);
    } else if (op < 92) {
      const extra = rng.chance(0.5) ? rng.int(512) : cluster * (1 + rng.int(4));
      const fill = Buffer.alloc(extra, rng.pick(BYTE_VALUES));
      if (rng.chance(0.5)) for (let j = 0; j + 4 <= extra; j += 4) fill.writeUInt32LE(rng.u32(), j);
      b = Buffer.concat([b, fill]);
      ops.push(`extend ${extra}`);
    } else {
      // copy a run of bytes from one place to another (e.g. an L2 over the L1)
      const from = rng.chance(0.5) && tables.length > 0 ? rng.pick(tables) : anywhere();
      const to = rng.chance(0.5) && tables.length > 0 ? rng.pick(tables) : anywhere();
      const len = Math.min(1 + rng.int(64), b.length - from, b.length - to);
      if (len > 0) b.copy(b, to, from, from + len);
      ops.push(`copy ${from}->${to}/${len}`);
    }
  }
  return { bytes: b, ops };
}

// ---------------------------------------------------------------- option trees

const KEYS = [
  'driver', 'file', 'backing', 'data-file', 'nodeName', 'readOnly', 'filename', 'size', 'alignment', 'maxTransfer', 'readZeroes',
  'latencyNs', 'rules', 'align', 'throttleGroup', 'throttle', 'id', 'offset', 'locking', 'snapshot', 'l2CacheSize', 'backingChain',
  'event', 'code', 'once', 'after', 'iopsTotal', 'bpsTotal', 'group', '__proto__', 'constructor', 'toString', 'valueOf', 'then', '',
];
const DRIVERS = ['memory', 'null', 'raw', 'blkdebug', 'throttle', 'qcow2', 'file'];
const NUMBERS = [0, -0, -1, 1, 0.5, 2 ** 53, 2 ** 53 + 2, 2 ** 64, -(2 ** 63), Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Number.MIN_VALUE, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 512, 4096, 65536, 3, 1e21, 2 ** 31, 2 ** 32];

function randomString(rng: Rng, tokens: readonly string[], max = 12): string {
  const n = rng.int(max);
  let s = '';
  for (let i = 0; i < n; i++) {
    const r = rng.int(10);
    if (r < 7) s += rng.pick(tokens);
    else if (r < 9) s += String.fromCharCode(rng.int(128));
    else s += String.fromCodePoint(rng.chance(0.5) ? 0xd800 + rng.int(0x800) : rng.int(0x10ffff));
  }
  return s;
}

const STRING_TOKENS = ['', 'a', 'drive0', 'g', '1', '-1', '64M', '1e3', 'NaN', '0x10', ' ', '.', '/', '..', 'on', 'off', 'true', 'memory', 'qcow2', 'k', 'T', '18446744073709551616'];

function randomValue(rng: Rng, depth: number, env: TreeEnv): unknown {
  const r = rng.int(depth > 12 ? 6 : 11);
  switch (r) {
    case 0:
      return rng.pick(NUMBERS);
    case 1:
      return randomString(rng, STRING_TOKENS, 4);
    case 2:
      return rng.chance(0.5);
    case 3:
      return rng.chance(0.5) ? null : undefined;
    case 4:
      return rng.int(1 << 20);
    case 5:
      return rng.pick([BigInt(7), Symbol('s'), () => 1, new Date(0), /re/, new Uint8Array(4), new Map()]);
    case 6:
    case 7:
      return randomTree(rng, depth + 1, env);
    case 8:
      return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth + 1, env));
    case 9:
      return env.objects.length > 0 ? rng.pick(env.objects) : {};
    default:
      return rng.pick(DRIVERS);
  }
}

interface TreeEnv {
  objects: object[];
  filename: string;
  /** A valid qcow2 image for valid trees. */
  qcow2?: string;
}

/** Sets an own property, even for '__proto__' (as JSON.parse makes it), never the prototype. */
function setOwn(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/** A random option tree: mostly plausible (a known driver, its keys), with hostile values mixed in. */
function randomTree(rng: Rng, depth: number, env: TreeEnv): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  env.objects.push(o);
  if (rng.chance(0.9)) o.driver = rng.chance(0.9) ? rng.pick(DRIVERS) : randomValue(rng, depth + 1, env);
  const plausible = (k: string): unknown => {
    switch (k) {
      case 'size':
        return rng.pick([65536, 1 << 20, '1M', 0, 512, rng.pick(NUMBERS)]);
      case 'filename':
        return rng.chance(0.8) ? env.filename : rng.pick(['', 'missing.raw', './nope/x', '\0', 'options-target.raw']);
      case 'throttleGroup':
        return rng.pick(['g', 'h', '', 'missing']);
      case 'file':
      case 'backing':
      case 'data-file':
        return depth > 40 ? null : rng.chance(0.85) ? randomTree(rng, depth + 1, env) : randomValue(rng, depth + 1, env);
      case 'readOnly':
        return rng.chance(0.8) ? rng.chance(0.7) : randomValue(rng, depth + 1, env);
      case 'rules':
        return [{ event: rng.pick(['read_aio', 'write_aio', 'flush', 'bogus']), code: rng.pick(['EIO', 'ENOSPC', 'X']), once: rng.chance(0.5) }];
      case 'throttle':
        return { group: rng.pick(['g', 'h', '']), iopsTotal: rng.pick(NUMBERS), bpsTotal: rng.pick(NUMBERS), iopsTotalMax: rng.pick(NUMBERS) };
      default:
        return randomValue(rng, depth + 1, env);
    }
  };
  const n = rng.int(5);
  for (let i = 0; i < n; i++) {
    const k = rng.chance(0.85) ? rng.pick(KEYS) : randomString(rng, STRING_TOKENS, 3);
    setOwn(o, k, plausible(k));
  }
  // children every driver of the family needs, so that trees get deep
  if (o.driver === 'raw' || o.driver === 'qcow2' || o.driver === 'throttle' || o.driver === 'blkdebug') {
    if (!('file' in o) && rng.chance(0.8)) o.file = plausible('file');
  }
  if (o.driver === 'memory' && !('size' in o) && rng.chance(0.8)) o.size = plausible('size');
  if (o.driver === 'file' && !('filename' in o) && rng.chance(0.9)) o.filename = plausible('filename');
  if (o.driver === 'throttle' && !('throttleGroup' in o) && rng.chance(0.8)) o.throttleGroup = plausible('throttleGroup');
  if (rng.chance(0.01)) o.file = o; // a cycle
  if (rng.chance(0.005)) {
    // deep nesting
    let cur = o;
    for (let i = 0; i < 2000; i++) {
      const next: Record<string, unknown> = { driver: 'raw' };
      cur.file = next;
      cur = next;
    }
    cur.file = { driver: 'memory', size: 4096 };
  }
  return o;
}

/** A valid option tree (a stack of filters and formats over a protocol), to be spoiled in one place. */
function validTree(rng: Rng, env: TreeEnv, depth = 0): Record<string, unknown> {
  const leaf = (): Record<string, unknown> =>
    rng.chance(0.5)
      ? { driver: 'memory', size: rng.pick([512, 4096, 65536, 1 << 20]), ...(rng.chance(0.3) ? { alignment: 512 } : {}), ...(rng.chance(0.3) ? { maxTransfer: 4096 } : {}) }
      : rng.chance(0.5)
        ? { driver: 'file', filename: env.filename, readOnly: true, ...(rng.chance(0.3) ? { locking: rng.pick(['on', 'off', 'auto']) } : {}) }
        : { driver: 'null', size: rng.pick([0, 512, 1 << 20, 2 ** 40]), ...(rng.chance(0.5) ? { readZeroes: rng.chance(0.5) } : {}) };
  if (depth > 4 || rng.chance(0.3)) return leaf();
  const file = validTree(rng, env, depth + 1);
  switch (rng.int(4)) {
    case 0:
      return { driver: 'raw', file, ...(rng.chance(0.4) ? { offset: rng.pick([0, 512, 4096]), size: rng.pick([512, 4096]) } : {}) };
    case 1:
      return { driver: 'throttle', throttleGroup: 'g', file };
    case 2:
      return { driver: 'blkdebug', file, ...(rng.chance(0.5) ? { align: 512, rules: [{ event: 'read_aio', code: 'EIO', once: true }] } : {}) };
    default:
      return { driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: env.qcow2, readOnly: true }, ...(rng.chance(0.3) ? { backing: null } : {}) };
  }
}

/** Spoils a valid tree in one or two places: a hostile value under a known or unknown key, a cycle, a string for a child. */
function spoil(rng: Rng, tree: Record<string, unknown>, env: TreeEnv): Record<string, unknown> {
  const nodes: Record<string, unknown>[] = [];
  const walk = (o: Record<string, unknown>) => {
    nodes.push(o);
    for (const v of Object.values(o)) if (v !== null && typeof v === 'object' && !Array.isArray(v)) walk(v as Record<string, unknown>);
  };
  walk(tree);
  for (let i = rng.int(2) + 1; i > 0; i--) {
    const o = rng.pick(nodes);
    const keys = Object.keys(o);
    const k = rng.chance(0.7) && keys.length > 0 ? rng.pick(keys) : rng.pick(KEYS);
    const r = rng.int(6);
    const v = r === 0 ? rng.pick(NUMBERS) : r === 1 ? rng.pick(nodes) : r === 2 ? randomString(rng, STRING_TOKENS, 3) : r === 3 ? null : randomValue(rng, 8, env);
    setOwn(o, k, v);
  }
  return tree;
}

/** JSON with cycles, NaN, ±Infinity, -0, undefined, bigint and functions spelled out, for saving. */
function toJson(v: unknown): string {
  const seen = new WeakMap<object, string>();
  const walk = (x: unknown, at: string): unknown => {
    if (typeof x === 'number') {
      if (Number.isNaN(x)) return { $number: 'NaN' };
      if (!Number.isFinite(x)) return { $number: x > 0 ? 'Infinity' : '-Infinity' };
      if (Object.is(x, -0)) return { $number: '-0' };
      return x;
    }
    if (x === undefined) return { $undefined: true };
    if (typeof x === 'bigint') return { $bigint: String(x) };
    if (typeof x === 'symbol' || typeof x === 'function') return { $other: String(x) };
    if (x === null || typeof x !== 'object') return x;
    if (seen.has(x)) return { $ref: seen.get(x) };
    seen.set(x, at);
    if (Array.isArray(x)) return x.map((e, i) => walk(e, `${at}/${i}`));
    if (!(Object.getPrototypeOf(x) === Object.prototype || Object.getPrototypeOf(x) === null)) return { $other: Object.prototype.toString.call(x) };
    const o: Record<string, unknown> = {};
    for (const [k, e] of Object.entries(x)) o[k] = walk(e, `${at}/${k}`);
    return o;
  };
  return JSON.stringify(walk(v, '#'), null, 1);
}

// ---------------------------------------------------------------- parser strings

const DRIVE_TOKENS = [
  ',', ',,', '=', 'file=', 'if=none', 'format=', 'id=', 'throttling.', 'iops-total', 'iops', 'iops_rd', 'iops_wr', 'bps', 'bps_rd', 'bps_wr',
  'iops_max', 'bps_max_length', 'iops_size', 'group', 'throttling.group=', 'throttling.iops-total-max-length=', 'throttling.bps-read=',
  '1', '0', '-1', '1e308', 'NaN', '0x10', '1k', '1M', '1.5G', '9999999999999999999999', '18446744073709551615', ' ', 'on', 'off', 'yes', 'readonly=', 'snapshot=',
];
const XML_TOKENS = [
  '<iotune>', '</iotune>', '<total_bytes_sec>', '</total_bytes_sec>', '<read_iops_sec>', '</read_iops_sec>', '<group_name>', '</group_name>',
  '<total_iops_sec_max_length>', '</total_iops_sec_max_length>', '<size_iops_sec>', '</size_iops_sec>', '<![CDATA[', ']]>', '&amp;', '&lt;',
  '&#x41;', '&#99999999;', '&#xD800;', '&#;', '&bogus;', '<!--', '-->', '<?xml version="1.0"?>', '<x a="1">', '</x>', '<a/>', '"', "'", '<', '>', '/',
  '1', '0', '-5', '1e3', '18446744073709551616', ' ', '\n', 'NaN',
];
const QMP_KEYS = ['device', 'id', 'iops', 'bps', 'iops_rd', 'iops_wr', 'bps_rd', 'bps_wr', 'iops_max', 'bps_max', 'iops_size', 'group', 'bps_max_length', 'iops_rd_max_length', 'x'];
const LIBVIRT_KEYS = ['total_bytes_sec', 'read_bytes_sec', 'write_iops_sec', 'total_iops_sec_max', 'size_iops_sec', 'group_name', 'total_bytes_sec_max_length', 'x', ''];
const QOM_TOKENS = ['qom-type=throttle-group', 'id=', 'g', ',', '=', 'x-iops-total=', 'limits.iops-total=', 'limits.bps-read-max=', 'x-bps-total-max-length=', '1', '-1', '1e9', 'NaN', ',,', 'limits.', 'x-'];

function parserCase(rng: Rng): { label: string; input: unknown; run: () => unknown } {
  const which = rng.int(6);
  if (which === 0) {
    const s = randomString(rng, DRIVE_TOKENS, 20);
    return { label: 'parseDriveString', input: s, run: () => parseDriveString(s) };
  }
  if (which === 1) {
    const s = randomString(rng, XML_TOKENS, 24);
    return { label: 'parseIotuneXml', input: s, run: () => parseIotuneXml(s) };
  }
  if (which === 2) {
    const o: Record<string, unknown> = {};
    for (let i = rng.int(6); i > 0; i--) setOwn(o, rng.chance(0.9) ? rng.pick(QMP_KEYS) : randomString(rng, STRING_TOKENS, 2), rng.chance(0.6) ? rng.pick(NUMBERS) : randomValue(rng, 10, { objects: [], filename: 'x' }));
    return { label: 'parseBlockSetIoThrottle', input: o, run: () => parseBlockSetIoThrottle(o) };
  }
  if (which === 3) {
    const o: Record<string, unknown> = {};
    for (let i = rng.int(6); i > 0; i--) setOwn(o, rng.chance(0.9) ? rng.pick(LIBVIRT_KEYS) : randomString(rng, STRING_TOKENS, 2), rng.chance(0.6) ? rng.pick(NUMBERS) : randomValue(rng, 10, { objects: [], filename: 'x' }));
    return { label: 'fromLibvirtIotune', input: o, run: () => fromLibvirtIotune(o as Record<string, number | string>) };
  }
  if (which === 4) {
    const s = randomString(rng, QOM_TOKENS, 16);
    return { label: 'parseThrottleGroupObject(string)', input: s, run: () => parseThrottleGroupObject(s) };
  }
  const env: TreeEnv = { objects: [], filename: 'x' };
  const v = rng.chance(0.8) ? randomTree(rng, 10, env) : randomValue(rng, 10, env);
  return { label: 'parseThrottleGroupObject(object)', input: v, run: () => parseThrottleGroupObject(v as Record<string, unknown>) };
}

// ---------------------------------------------------------------- findings

function messagePattern(msg: string): string {
  return msg
    .replace(/'[^']*'|"[^"]*"/g, 'S')
    .replace(/\/[\w./-]+/g, 'P')
    .replace(/0x[0-9a-f]+/gi, 'N')
    .replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi, 'N')
    .slice(0, 120);
}

function topFrame(stack: string | undefined): string {
  const lines = (stack ?? '').split('\n').filter((l) => l.trim().startsWith('at '));
  const own = lines.find((l) => l.includes('/src/')) ?? lines[0] ?? '';
  return own.trim().replace(/:\d+\)?$/, '').replace(/^.*\/(src\/)/, '$1');
}

/** The files of an image case: the mutant's name, the file opened, and the companions (paths in the corpus). */
interface CaseFiles {
  mutant: string;
  open: string;
  companions: string[];
}

function caseFiles(corpus: string, seed: Seed | undefined): CaseFiles | undefined {
  return seed && { mutant: seed.name, open: seed.open ?? seed.name, companions: (seed.companions ?? []).map((c) => path.join(corpus, c)) };
}

function saveFinding(out: string, kind: FindingKind, key: string, summary: string, caseKind: Kind, input: Buffer | string, extra = '', files?: CaseFiles): string | undefined {
  const hash = createHash('sha1').update(key).digest('hex').slice(0, 10);
  const dir = path.join(out, `${kind}-${hash}`);
  if (fs.existsSync(dir)) return undefined;
  fs.mkdirSync(dir, { recursive: true });
  const inputName = caseKind === 'image' ? 'input.img' : 'input.json';
  fs.writeFileSync(path.join(dir, inputName), input);
  let where = '';
  if (files) {
    // the case as it ran: the mutant under its seed's name beside copies of its companions
    const caseDir = path.join(dir, 'case');
    fs.mkdirSync(caseDir);
    fs.writeFileSync(path.join(caseDir, files.mutant), input);
    for (const c of files.companions) if (fs.existsSync(c)) fs.copyFileSync(c, path.join(caseDir, path.basename(c)));
    where = `mutated: ${files.mutant}; opened: case/${files.open}\n`;
  }
  fs.writeFileSync(path.join(dir, 'finding.txt'), `${summary}\nkey: ${key}\ncase: ${caseKind}\n${where}${extra}\n`);
  return `${dir}: ${summary}`;
}

// ---------------------------------------------------------------- the fuzz loop (child)

async function exercise(drive: Drive, rng: Rng): Promise<void> {
  drive.node.info();
  const len = drive.length;
  const ranges: [number, number][] = [];
  if (len <= READ_CAP) ranges.push([0, len]);
  else {
    ranges.push([0, Math.min(len, 4 * CHUNK)]);
    for (let i = 0; i < 16; i++) {
      const at = Math.floor((rng.u32() / 2 ** 32) * (len - 65536));
      ranges.push([at, 65536]);
    }
    ranges.push([len - 65536, 65536]);
  }
  for (const [start, length] of ranges) {
    let pos = start;
    let steps = 0;
    while (pos < start + length && steps++ < 4096) {
      const s = await drive.blockStatus(pos, start + length - pos);
      if (!(s.length > 0)) throw new Error(`blockStatus returned length ${s.length} at ${pos}`);
      pos += s.length;
    }
    for (let at = start; at < start + length; at += CHUNK) await drive.read(at, Math.min(CHUNK, start + length - at));
  }
}

async function child(): Promise<void> {
  const out = path.resolve(args.out!);
  const corpus = args.corpus!;
  process.chdir(corpus);
  const seeds = loadSeeds(corpus);
  const rng = new Rng(Number(args.seed));
  const deadline = Date.now() + Number(args.seconds) * 1000;
  const stats: Stats = { image: 0, options: 0, parser: 0, findings: {}, newFindings: [], rss: [], outcomes: {}, samples: {} };
  const gc = (globalThis as { gc?: () => void }).gc;
  let current: { kind: Kind; label: string; input: Buffer | string; seed?: Seed } = { kind: 'parser', label: 'start', input: '' };
  const caseDir = path.join(corpus, 'case');
  const currentFile = path.join(out, '.current');
  const currentInput = path.join(out, '.current-input');

  const report = (kind: FindingKind, e: unknown, phase: string) => {
    stats.findings[kind] = (stats.findings[kind] ?? 0) + 1;
    const err = e as Error | undefined;
    const cls = err?.constructor?.name ?? typeof e;
    const msg = err instanceof Error ? err.message : String(e);
    const key = kind === 'slow' || kind === 'hang' ? `${kind}|${current.kind}|${current.label.split(' ')[0]}|${phase}` : `${kind}|${cls}|${messagePattern(msg)}|${topFrame(err?.stack)}`;
    const summary = `${kind}: ${cls}: ${msg.slice(0, 300)} [${current.label}] (${phase})`;
    const dir = saveFinding(out, kind, key, summary, current.kind, current.input, err?.stack ?? '', caseFiles(corpus, current.seed));
    if (dir) {
      stats.newFindings.push(dir);
      console.log(`fuzz: NEW ${summary}`);
    }
  };
  process.on('unhandledRejection', (e) => report('unhandled', e, 'unhandledRejection'));
  process.on('uncaughtException', (e) => report('unhandled', e, 'uncaughtException'));

  const setCurrent = (c: typeof current) => {
    current = c;
    fs.writeFileSync(currentInput, c.input);
    fs.writeFileSync(currentFile, JSON.stringify({ kind: c.kind, label: c.label, input: currentInput, files: caseFiles(corpus, c.seed) }));
  };
  const outcome = (what: string) => {
    const k = `${current.kind}:${what}`;
    stats.outcomes[k] = (stats.outcomes[k] ?? 0) + 1;
  };
  const check = (e: unknown, phase: string) => {
    if (!(e instanceof BlockError)) report('error', e, phase);
    // A node's own range guard firing in an image case: the fuzzer's requests are in range, so a driver made a bad one.
    else if (current.kind === 'image' && INTERNAL_GUARD.test(e.message)) report('guard', e, phase);
    outcome(e instanceof BlockError ? `${phase}:${e.code}` : `${phase}:other`);
    if (e instanceof BlockError && (process.env.FUZZ_SAMPLES === 'all' || ['EIO', 'ENOENT', 'EACCES', 'EBUSY', 'ELOCKED'].includes(e.code))) {
      stats.samples[`${current.kind}:${phase}:${e.code}`] ??= `${e.message.slice(0, 200)} [${current.label.slice(0, 120)}]`;
    }
  };

  let n = 0;
  let rssBase = 0;
  let rssReported = false;
  while (Date.now() < deadline) {
    n++;
    const kindRoll = rng.int(10);
    // case wall time: from here to the end of the case, restarted once the mutant is written
    let t0 = performance.now();
    let cpu0 = process.cpuUsage();
    let phase = 'start';
    let slowest = { phase: 'start', ms: 0 };
    let phaseStart = performance.now();
    const setPhase = (p: string) => {
      const now = performance.now();
      if (now - phaseStart > slowest.ms) slowest = { phase, ms: now - phaseStart };
      phase = p;
      phaseStart = now;
    };
    if (kindRoll < 6) {
      stats.image++;
      const seed = rng.pick(seeds);
      const { bytes, ops } = mutate(rng, seed.bytes, seed.text);
      // The case's files in a directory of their own: the mutant under its seed's name, its companions beside it
      // (a base, extents, a data file), so that names inside the image resolve and writes touch only copies.
      fs.rmSync(caseDir, { recursive: true, force: true });
      fs.mkdirSync(caseDir);
      for (const c of seed.companions ?? []) fs.copyFileSync(path.join(corpus, c), path.join(caseDir, c));
      fs.writeFileSync(path.join(caseDir, seed.name), bytes);
      const file = path.join(caseDir, seed.open ?? seed.name);
      const format = seedFormat(seed.open ?? seed.name);
      const how = rng.int(4);
      const snapshot = seed.snapshots && rng.chance(0.5) ? rng.pick(seed.snapshots) : undefined;
      const opsRoll = rng.u32();
      setCurrent({ kind: 'image', label: `${seed.name} ${ops.join(';')} open#${how}${snapshot ? ` snapshot=${snapshot}` : ''} ops#${opsRoll}`, input: bytes, seed });
      const layer = new BlockLayer();
      t0 = performance.now();
      cpu0 = process.cpuUsage();
      const opsRng = new Rng(opsRoll);
      const run = async () => {
        let drive: Drive | undefined;
        try {
          setPhase('open');
          const other = format !== 'qcow2' && format !== 'raw' ? format : undefined;
          if (how === 0) drive = await openImage(file, snapshot ? { snapshot } as never : {}, layer);
          // the other formats: read-only, and read-write on a copy (a vhdx log replays, allocation paths run)
          else if (other !== undefined && how < 3) drive = await layer.openDrive({ driver: other, readOnly: how === 1, file: { driver: 'file', filename: file, readOnly: how === 1 } });
          else if (how === 1 || snapshot) drive = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: file, readOnly: true }, ...(snapshot ? { snapshot } : {}) });
          else if (how === 2 && opsRng.chance(0.5)) drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } });
          else if (how === 2) drive = await layer.openDrive({ driver: 'qcow2', readOnly: true, l2CacheSize: 65536, file: { driver: 'file', filename: file, readOnly: true }, backing: null });
          else drive = await layer.openDrive({ driver: 'raw', readOnly: true, file: { driver: 'file', filename: file, readOnly: true } });
          setPhase('read');
          await exercise(drive, rng);
          if (drive.node.driver.name === 'qcow2' && opsRng.chance(0.6)) {
            setPhase('bitmaps');
            await bitmapOps(drive, opsRng);
          }
          if (!drive.readOnly && opsRng.chance(0.8)) {
            setPhase('write');
            await writeOps(drive, opsRng);
          }
          setPhase('close');
          await drive.close();
          if (opsRng.chance(0.5)) await toolOp(file, format, opsRng, setPhase);
          outcome('ok');
        } catch (e) {
          check(e, phase);
        } finally {
          setPhase('close');
          await layer.close().catch((e) => check(e, 'close'));
        }
      };
      const r = await withTimeout(run(), HANG_MS);
      if (r === 'timeout') report('hang', new Error(`case did not settle in ${HANG_MS} ms`), phase);
    } else if (kindRoll < 8) {
      stats.options++;
      const env: TreeEnv = { objects: [], filename: path.join(corpus, 'options-target.raw'), qcow2: path.join(corpus, rng.pick(['v3-64k.qcow2', 'overlay.qcow2', 'zstd.qcow2'])) };
      const roll = rng.int(10);
      const tree = roll < 5 ? spoil(rng, validTree(rng, env), env) : roll < 6 ? validTree(rng, env) : roll < 9 ? randomTree(rng, 0, env) : randomValue(rng, 0, env);
      const viaNode = rng.chance(0.3);
      setCurrent({ kind: 'options', label: `options ${viaNode ? 'openNode' : 'openDrive'}`, input: toJson(tree) });
      // A virtual clock, moved on while the case runs: a tree throttled to a few bytes a second
      // reads at once instead of looking like a hang (real-clock throttling is not what this fuzzes).
      const clock = new VirtualClock();
      const layer = new BlockLayer({ clock });
      if (rng.chance(0.7)) layer.createThrottleGroup('g', rng.chance(0.5) ? { iopsTotal: 1000 } : {});
      let caseDone = false;
      const moveClock = async () => {
        while (!caseDone) {
          await clock.runUntilIdle(10_000);
          await new Promise((r) => setImmediate(r));
        }
      };
      void moveClock();
      const run = async () => {
        try {
          setPhase('open');
          if (viaNode) {
            const node = await layer.openNode(tree as never);
            setPhase('read');
            node.info();
            if (node.length > 0) await node.read(0, new Uint8Array(Math.min(4096, node.length)));
            await node.blockStatus(0, Math.max(1, Math.min(node.length, 1 << 20))).catch((e) => check(e, 'blockStatus'));
            await node.unref();
          } else {
            const drive = await layer.openDrive(tree as never);
            setPhase('read');
            drive.node.info();
            if (drive.length > 0) {
              await drive.read(0, Math.min(4096, drive.length));
              await drive.read(Math.max(0, drive.length - 4096), Math.min(4096, drive.length));
              await drive.blockStatus(0, Math.min(drive.length, 1 << 20));
            }
          }
          outcome('ok');
        } catch (e) {
          check(e, phase);
        } finally {
          setPhase('close');
          await layer.close().catch((e) => check(e, 'close'));
        }
      };
      const r = await withTimeout(run(), HANG_MS);
      caseDone = true;
      if (r === 'timeout') report('hang', new Error(`case did not settle in ${HANG_MS} ms`), phase);
    } else {
      stats.parser++;
      const c = parserCase(rng);
      setCurrent({ kind: 'parser', label: c.label, input: toJson({ parser: c.label, input: c.input }) });
      phase = c.label;
      try {
        c.run();
        outcome('ok');
      } catch (e) {
        check(e, c.label);
      }
    }
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    setPhase('end');
    // Slow: over the limit in wall time and at least half of it on the CPU; a case that only waited
    // (fdatasync of a vhdx log replay, other processes on a loaded machine) is not one.
    if (ms > SLOW_MS && cpuMs > SLOW_MS / 2) report('slow', new Error(`case took ${ms.toFixed(0)} ms, ${cpuMs.toFixed(0)} ms of CPU (${slowest.phase} ${slowest.ms.toFixed(0)} ms)`), slowest.phase);
    if (n % RSS_EVERY === 0) {
      gc?.();
      const mem = process.memoryUsage();
      const rss = mem.rss;
      stats.rss.push(rss);
      // Baseline: the high-water mark of the warm-up (samples 3 to 10); growth: the smallest of the
      // last five samples above it, so that the allocator's plateau or one large allocation it keeps
      // (a mutant with a huge table) is not taken for a leak, while a leak lifts even the minimum.
      const settled = Math.min(...stats.rss.slice(-5));
      if (stats.rss.length === 10) rssBase = Math.max(...stats.rss.slice(2));
      else if (rssBase > 0 && !rssReported && settled - rssBase > RSS_BOUND) {
        rssReported = true;
        current = { kind: 'parser', label: 'rss', input: JSON.stringify(stats.rss) };
        report('rss', new Error(`RSS grew ${((settled - rssBase) / 2 ** 20).toFixed(0)} MiB over ${n} cases (gc ${gc ? 'on' : 'off'}; now heap ${(mem.heapUsed / 2 ** 20).toFixed(0)} MiB, external ${(mem.external / 2 ** 20).toFixed(0)} MiB)`), 'rss');
      }
    }
    process.send?.(n % 50 === 0 ? { stats } : { beat: n });
  }
  fs.rmSync(currentFile, { force: true });
  fs.rmSync(currentInput, { force: true });
  // Leaked handles (a hung case) must not keep the child alive.
  if (process.send) process.send({ stats }, () => process.exit(0));
  else process.exit(0);
}

if (args.child) await child();
else await supervise();
