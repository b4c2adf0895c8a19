/**
 * block-stream and block-commit (#24) of the same chain, ours vs qemu-storage-daemon: base ← mid
 * ← top of 1 GiB, mid holding 50 % data (every other MiB), top a few MiB. Stream: top takes mid
 * (base-node=base). Commit: mid goes into base (top-node=mid). Active commit: top (and mid) go
 * into base, READY, then job-complete pivots (timed up to the job's end). Each round starts from fresh
 * copies of the chain, on the disk before the clock starts (see `settled`); QSD runs as its own
 * process (started before the clock runs), driven over QMP until the job's JOB_STATUS_CHANGE
 * null; ours is the library's job in this process. Both results are checked with qemu-img
 * compare. Ratio = QSD time / ours (above 1: ours is faster). Ours makes the base durable before
 * the relink and QSD does not (its own qcow2 cache flushes aside), so on a busy or slow device
 * the commit figures follow the device's write rate more than either copy loop.
 *
 *   npx tsx bench/stream-commit.ts [--rounds N] [--kinds stream,commit,commit-active] [--unsettled]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlockLayer } from '../src/index.js';
import type { BlockNode } from '../src/node/node.js';
import { startQsd } from '../tests/helpers/qmp-client.js';
import { row, sideBySide } from './util.js';

const SIZE = 2 ** 30;

/** The pristine chain in `at`. */
function makeChain(at: string): void {
  const p = (n: string) => path.join(at, `${n}.qcow2`);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', p('base'), String(SIZE)]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', p('base'), '-F', 'qcow2', p('mid')]);
  const cmds = Array.from({ length: SIZE / 2 ** 21 }, (_, i) => `write -P ${(i % 200) + 1} ${i * 2}M 1M`).join('\n');
  execFileSync('qemu-io', ['-f', 'qcow2', p('mid')], { input: `${cmds}\n`, stdio: ['pipe', 'ignore', 'inherit'] });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', p('mid'), '-F', 'qcow2', p('top')]);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xee 100M 4M', p('top')], { stdio: 'ignore' });
}

/**
 * Whether each run starts from a chain at rest on the disk (default): the fresh copies are
 * flushed before the clock starts, and each run's files after it stops, untimed. Without it
 * (--unsettled), the copies' write-back (1 GiB, written by the kernel 30 s later) lands in a
 * later run, on either side, while that run's own write-back competes with it for the device.
 */
let settled = true;

/** fdatasync of the chain's files in `at` (untimed). */
function settle(at: string): void {
  if (!settled) return;
  for (const n of ['base', 'mid', 'top']) {
    const fd = fs.openSync(path.join(at, `${n}.qcow2`), 'r');
    try {
      fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}

function copyChain(from: string, to: string): void {
  fs.rmSync(to, { recursive: true, force: true });
  fs.mkdirSync(to);
  for (const n of ['base', 'mid', 'top']) fs.copyFileSync(path.join(from, `${n}.qcow2`), path.join(to, `${n}.qcow2`));
  settle(to);
}

type Kind = 'stream' | 'commit' | 'commit-active';
const KINDS: readonly Kind[] = ['stream', 'commit', 'commit-active'];

/** CPU ms (user + system) of each side's timed runs, for the CPU-per-job line (load-independent, unlike the times). */
const cpu = { qsd: [] as number[], ours: [] as number[] };

/**
 * What reaches the disk, per side and per run: bytes the device wrote while the job ran (the
 * whole device's count, so other processes' writes are in it too), and how long an fdatasync of
 * the changed image takes right after the job ends (untimed): what the job left unwritten. Ours
 * flushes the base before the relink and leaves little; QSD's commit flushes only when its qcow2
 * metadata needs it, and leaves the rest to the kernel.
 */
const disk = {
  qsd: { mib: [] as number[], left: [] as number[], ms: [] as number[] },
  ours: { mib: [] as number[], left: [] as number[], ms: [] as number[] },
};

/** The /sys stat file of the block device holding `dir`, or null (not Linux, no such device). */
function deviceStat(dir: string): string | null {
  const dev = fs.statSync(dir).dev;
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
  const file = `/sys/dev/block/${major}:${minor}/stat`;
  return fs.existsSync(file) ? file : null;
}

/** Bytes the device has written since boot (sectors of 512 bytes), or NaN without a stat file. */
function deviceWritten(stat: string | null): number {
  if (stat === null) return NaN;
  return Number(fs.readFileSync(stat, 'utf8').trim().split(/\s+/)[6]) * 512;
}

/** ms of an fdatasync of `file` (what was left to write); NaN with --unsettled (the copies' own write-back would be in it). */
function leftToFlush(file: string): number {
  if (!settled) return NaN;
  const fd = fs.openSync(file, 'r');
  try {
    const t0 = performance.now();
    fs.fdatasyncSync(fd);
    return performance.now() - t0;
  } finally {
    fs.closeSync(fd);
  }
}

/** The image a job of `kind` changes. */
const changedImage = (kind: Kind) => (kind === 'stream' ? 'top.qcow2' : 'base.qcow2');

/** CPU time (ms) of a process from /proc (clock ticks of 10 ms). */
function procCpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CPU time (ms) of this process. */
function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** The pid of the qemu-storage-daemon just started in `dir` (its pid file). */
function qsdPid(dir: string): number {
  const file = fs.readdirSync(dir).filter((f) => f.startsWith('qemu-storage-daemon-') && f.endsWith('.pid')).sort().at(-1)!;
  return Number(fs.readFileSync(path.join(dir, file), 'utf8'));
}
const QMP_ARGS: Record<Kind, Record<string, unknown>> = {
  stream: { 'job-id': 'j', device: 'top', 'base-node': 'base' },
  commit: { 'job-id': 'j', device: 'top', 'top-node': 'mid', 'base-node': 'base' },
  'commit-active': { 'job-id': 'j', device: 'top', 'base-node': 'base' },
};

/** ms of one job in qemu-storage-daemon over a fresh copy in `at`. */
async function qsdOnce(kind: Kind, orig: string, at: string): Promise<number> {
  copyChain(orig, at);
  const args: string[] = [];
  for (const [n, backing] of [['base', ''], ['mid', ',backing=base'], ['top', ',backing=mid']]) {
    args.push('--blockdev', `driver=file,node-name=${n}-file,filename=${path.join(at, `${n}.qcow2`)}`, '--blockdev', `driver=qcow2,node-name=${n},file=${n}-file${backing}`);
  }
  const qsd = await startQsd(at, args);
  try {
    const pid = qsdPid(at);
    const stat = deviceStat(at);
    const cpu0 = procCpuMs(pid);
    const dev0 = deviceWritten(stat);
    const t0 = performance.now();
    await qsd.qmp.ok(kind === 'stream' ? 'block-stream' : 'block-commit', QMP_ARGS[kind]);
    if (kind === 'commit-active') {
      await qsd.qmp.waitJobStatus('j', 'ready', 600_000);
      await qsd.qmp.ok('block-job-complete', { device: 'j' });
    }
    await qsd.qmp.waitJobStatus('j', 'null', 600_000);
    const ms = performance.now() - t0;
    cpu.qsd.push(procCpuMs(pid) - cpu0);
    disk.qsd.mib.push((deviceWritten(stat) - dev0) / 2 ** 20);
    // Before QSD stops: its exit flushes every image.
    disk.qsd.left.push(leftToFlush(path.join(at, changedImage(kind))));
    disk.qsd.ms.push(ms);
    return ms;
  } finally {
    await qsd.stop();
    settle(at);
  }
}

/** ms of one job in our layer over a fresh copy in `at`. */
async function oursOnce(kind: Kind, orig: string, at: string): Promise<number> {
  copyChain(orig, at);
  const layer = new BlockLayer();
  try {
    let below: BlockNode | null = null;
    for (const n of ['base', 'mid', 'top']) {
      const file = await layer.addNode({ driver: 'file', nodeName: `${n}-file`, filename: path.join(at, `${n}.qcow2`) });
      below = await layer.addNode({ driver: 'qcow2', nodeName: n, file, backing: below });
    }
    const stat = deviceStat(at);
    const cpu0 = ownCpuMs();
    const dev0 = deviceWritten(stat);
    const t0 = performance.now();
    const job = await layer.startJob(
      kind === 'stream'
        ? { type: 'stream', jobId: 'j', device: 'top', baseNode: 'base' }
        : kind === 'commit'
          ? { type: 'commit', jobId: 'j', device: 'top', topNode: 'mid', baseNode: 'base' }
          : { type: 'commit', jobId: 'j', device: 'top', baseNode: 'base' },
    );
    if (kind === 'commit-active') {
      if (!job.isReady) await new Promise<void>((r) => job.once('ready', () => r()));
      job.complete();
    }
    await job.wait();
    const ms = performance.now() - t0;
    cpu.ours.push(ownCpuMs() - cpu0);
    disk.ours.mib.push((deviceWritten(stat) - dev0) / 2 ** 20);
    disk.ours.left.push(leftToFlush(path.join(at, changedImage(kind))));
    disk.ours.ms.push(ms);
    return ms;
  } finally {
    await layer.close();
    settle(at);
  }
}

/** qemu-img compare of the two results (the image that changed). */
function sameResult(kind: Kind, a: string, b: string): boolean {
  const image = changedImage(kind);
  try {
    execFileSync('qemu-img', ['compare', '-q', path.join(a, image), path.join(b, image)]);
    return true;
  } catch {
    return false;
  }
}

export async function streamCommitBench(rounds = 5, kinds: readonly Kind[] = KINDS) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-stream-commit-'));
  try {
    const orig = path.join(dir, 'orig');
    fs.mkdirSync(orig);
    makeChain(orig);
    const out: Record<string, unknown> = {};
    for (const kind of kinds) {
      const q = path.join(dir, 'q');
      const o = path.join(dir, 'o');
      // Times are inverted into rates so that the ratio reads as everywhere else: above 1, ours is faster.
      const r = await sideBySide(
        rounds,
        async () => 1000 / (await qsdOnce(kind, orig, q)),
        async () => 1000 / (await oursOnce(kind, orig, o)),
      );
      const same = sameResult(kind, q, o);
      console.log(`block-${kind} of a 1 GiB chain (512 MiB to copy), median of ${rounds}, results ${same ? 'identical' : 'DIFFERENT'}`);
      row(`block-${kind} jobs per second: ours vs QSD`, r.subject.toFixed(3), r.baseline.toFixed(3), r.ratio, r.rounds);
      const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
      console.log(`    CPU per job (user + system, median): ours ${med(cpu.ours).toFixed(0)} ms, QSD ${med(cpu.qsd).toFixed(0)} ms`);
      console.log(
        `    disk per job (median): device writes while it ran ours ${med(disk.ours.mib).toFixed(0)} MiB, QSD ${med(disk.qsd.mib).toFixed(0)} MiB; ` +
          `left to flush after it ours ${med(disk.ours.left).toFixed(0)} ms, QSD ${med(disk.qsd.left).toFixed(0)} ms`,
      );
      // Each side's job and the flush of what it left, paired by round as the ratio above: both images on the disk.
      const durable = disk.ours.ms.map((ms, i) => (disk.qsd.ms[i]! + disk.qsd.left[i]!) / (ms + disk.ours.left[i]!));
      if (durable.every(Number.isFinite)) console.log(`    job + flush of what it left, QSD / ours (median of rounds): ratio ${med(durable).toFixed(3)}`);
      cpu.ours.length = 0;
      cpu.qsd.length = 0;
      for (const side of [disk.ours, disk.qsd]) {
        side.mib.length = 0;
        side.left.length = 0;
        side.ms.length = 0;
      }
      if (!same) throw new Error(`the ${kind} results differ`);
      out[kind] = { subject: r.subject, baseline: r.baseline, ratio: r.ratio, rounds: r.rounds, unit: 'jobs per second (higher is better)' };
    }
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--rounds');
  const k = process.argv.indexOf('--kinds');
  const kinds = k > 0 ? (process.argv[k + 1]!.split(',') as Kind[]) : undefined;
  settled = !process.argv.includes('--unsettled');
  await streamCommitBench(i > 0 ? Number(process.argv[i + 1]) : undefined, kinds);
}
