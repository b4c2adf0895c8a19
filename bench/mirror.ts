/**
 * blockdev-mirror of a 1 GiB qcow2 with 50 % data (1 MiB written every other MiB) onto a new
 * qcow2 (#24): the same QMP script against qemu-storage-daemon and against our QmpServer over a
 * BlockLayer in this process — blockdev-mirror sync=full, job-complete on BLOCK_JOB_READY, timed
 * from the command to JOB_STATUS_CHANGE null. Alternating rounds, a fresh target each time; the
 * targets must equal the source (qemu-img compare). Then the same with a guest (fio over an NBD
 * export of the source, 1,000 write IOPS) writing through the mirror and its pivot; the guest's
 * IOPS are printed (held near 1,000 on both). Goal: ratio (QSD time / ours) ≥ 1.0.
 *
 *   npx tsx bench/mirror.ts [--rounds N] [--no-guest] [--no-idle]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { BlockLayer } from '../src/index.js';
import type { BlockNode } from '../src/node/node.js';
import { NbdServer } from '../src/nbd/server.js';
import { NbdExportManager } from '../src/qmp/exports.js';
import { type QmpClient, startOurQmp, startQsd } from '../tests/helpers/qmp-client.js';
import { row, sideBySide } from './util.js';

const SIZE = 2 ** 30;
const MiB = 2 ** 20;

function makeSource(file: string): void {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(SIZE)]);
  const cmds = Array.from({ length: SIZE / MiB / 2 }, (_, i) => `write -P ${(i % 250) + 1} ${2 * i * MiB} 1M`).join('\n');
  execFileSync('qemu-io', ['-f', 'qcow2', file], { input: `${cmds}\n`, stdio: ['pipe', 'ignore', 'inherit'] });
}

/**
 * Per side and timed run: ms until BLOCK_JOB_READY, ms from job-complete to the job's end (the
 * last copy, its flush and the pivot), CPU ms of the daemon (ours: this process); ours also the
 * ms of the target's flush before READY (QEMU's mirror_flush), timed on the node.
 */
const trace = {
  ready: { qsd: [] as number[], ours: [] as number[] },
  pivot: { qsd: [] as number[], ours: [] as number[] },
  cpu: { qsd: [] as number[], ours: [] as number[] },
  /** The system part of `cpu` (the kernel's page-cache copies, write-out, wake-ups). */
  sys: { qsd: [] as number[], ours: [] as number[] },
  flush: { qsd: [] as number[], ours: [] as number[] },
};
type Side = 'qsd' | 'ours';
/** Our target's flushes of the current run: when each began and ended (performance.now()). */
const flushes: { start: number; end: number }[] = [];

/** Times every flush of our target node (the bench's own wrapper, on the instance). */
function timeFlushes(node: BlockNode): void {
  const flush = node.flush.bind(node);
  node.flush = async () => {
    const start = performance.now();
    try {
      await flush();
    } finally {
      flushes.push({ start, end: performance.now() });
    }
  };
}

/** CPU time (ms) of a process, user and system: ours from process.cpuUsage, QSD's from /proc (clock ticks of 10 ms). */
function cpuMs(pid: number | null): { user: number; sys: number } {
  if (pid === null) {
    const u = process.cpuUsage();
    return { user: u.user / 1000, sys: u.system / 1000 };
  }
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { user: Number(fields[11]) * 10, sys: Number(fields[12]) * 10 };
}

/** The pid of the qemu-storage-daemon started last in `dir` (its pid file). */
function qsdPid(dir: string): number {
  const files = fs.readdirSync(dir).filter((f) => f.startsWith('qemu-storage-daemon-') && f.endsWith('.pid')).sort();
  const pid = Number(fs.readFileSync(path.join(dir, files.at(-1)!), 'utf8'));
  for (const f of files) fs.rmSync(path.join(dir, f));
  return pid;
}

/** The timed part of the script: mirror, complete when READY, until the job is gone. */
async function mirrorScript(qmp: QmpClient, side: Side, pid: number | null): Promise<number> {
  const from = qmp.events.length;
  const cpu0 = cpuMs(pid);
  const t0 = performance.now();
  const r = await qmp.cmd('blockdev-mirror', { 'job-id': 'm', device: 'src', target: 'tgt', sync: 'full' });
  if (r.error) throw new Error(`blockdev-mirror: ${r.error.desc}`);
  flushes.length = 0;
  await qmp.waitEvent('BLOCK_JOB_READY', () => true, 600_000, from);
  const ready = performance.now();
  trace.ready[side].push(ready - t0);
  // The flush before READY: the last one that began before the event came.
  const before = flushes.filter((f) => f.start < ready).at(-1);
  if (side === 'ours' && before !== undefined) trace.flush.ours.push(before.end - before.start);
  await qmp.ok('job-complete', { id: 'm' });
  await qmp.waitEvent('JOB_STATUS_CHANGE', (d) => d.id === 'm' && d.status === 'null', 600_000, from);
  const ms = performance.now() - t0;
  trace.pivot[side].push(performance.now() - ready);
  const cpu1 = cpuMs(pid);
  trace.cpu[side].push(cpu1.user + cpu1.sys - cpu0.user - cpu0.sys);
  trace.sys[side].push(cpu1.sys - cpu0.sys);
  const completed = qmp.events.slice(from).find((e) => e.event === 'BLOCK_JOB_COMPLETED');
  if (completed?.data?.error !== undefined) throw new Error(`mirror failed: ${String(completed.data.error)}`);
  return ms;
}

/** A guest: fio over the export at 1,000 write IOPS for `seconds`; resolves with the IOPS it got. */
function guest(socket: string, seconds: number): Promise<number> {
  const child = spawn(
    'fio',
    ['--name=guest', '--ioengine=nbd', `--uri=nbd+unix:///disk?socket=${socket}`, '--rw=randwrite', '--bs=4k', '--size=256M', '--rate_iops=1000', '--iodepth=4', '--time_based', `--runtime=${seconds}`, '--output-format=json'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) =>
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`fio exit ${code}`));
      const json = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { write: { iops: number } }[] };
      resolve(json.jobs[0]!.write.iops);
    }),
  );
}

/** With a guest writing meanwhile: the mirror's time, and the guest's IOPS recorded in `iops`. */
async function underLoad(qmp: QmpClient, socket: string, iops: number[], side: Side, pid: number | null): Promise<number> {
  await qmp.ok('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'src', name: 'disk', writable: true });
  const load = guest(socket, 6);
  await new Promise((r) => setTimeout(r, 500));
  const ms = await mirrorScript(qmp, side, pid);
  iops.push(await load);
  return ms;
}

function sameImages(a: string, b: string): void {
  execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', a, b]);
}

async function main(): Promise<void> {
  const at = process.argv.indexOf('--rounds');
  const rounds = at > 0 ? Number(process.argv[at + 1]) : 3;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-mirror-'));
  try {
    const src = path.join(dir, 'src.qcow2');
    makeSource(src);
    const freshTarget = (name: string) => {
      const f = path.join(dir, name);
      fs.rmSync(f, { force: true });
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', f, String(SIZE)]);
      return f;
    };
    const qsd = async () => {
      const tgt = freshTarget('tgt-qsd.qcow2');
      const d = await startQsd(dir, [
        '--blockdev', `driver=file,node-name=src-file,filename=${src}`, '--blockdev', 'driver=qcow2,node-name=src,file=src-file',
        '--blockdev', `driver=file,node-name=tgt-file,filename=${tgt}`, '--blockdev', 'driver=qcow2,node-name=tgt,file=tgt-file',
      ]);
      try {
        return await mirrorScript(d.qmp, 'qsd', qsdPid(dir));
      } finally {
        await d.stop();
        sameImages(src, tgt);
      }
    };
    const ours = async () => {
      const tgt = freshTarget('tgt-ours.qcow2');
      const layer = new BlockLayer();
      await layer.addNode({ driver: 'qcow2', nodeName: 'src', file: { driver: 'file', filename: src } });
      timeFlushes(await layer.addNode({ driver: 'qcow2', nodeName: 'tgt', file: { driver: 'file', filename: tgt } }));
      const d = await startOurQmp(layer, dir);
      try {
        return await mirrorScript(d.qmp, 'ours', null);
      } finally {
        await d.stop();
        await layer.close();
        sameImages(src, tgt);
      }
    };
    console.log(`blockdev-mirror, 1 GiB qcow2, 50 % data → new qcow2 (${rounds} rounds, alternating)`);
    const med = (xs: number[]) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[xs.length >> 1]!);
    /** Time to READY and CPU time of each side (medians), then clears them for the next scenario. */
    const details = () => {
      console.log(`    until READY: ours ${med(trace.ready.ours).toFixed(0)} ms, QSD ${med(trace.ready.qsd).toFixed(0)} ms; CPU: ours ${med(trace.cpu.ours).toFixed(0)} ms (system ${med(trace.sys.ours).toFixed(0)}), QSD ${med(trace.cpu.qsd).toFixed(0)} ms (system ${med(trace.sys.qsd).toFixed(0)})`);
      console.log(`    READY → end (last copy, flush, pivot): ours ${med(trace.pivot.ours).toFixed(0)} ms, QSD ${med(trace.pivot.qsd).toFixed(0)} ms; our flush before READY ${med(trace.flush.ours).toFixed(0)} ms (rounds ${trace.flush.ours.map((x) => x.toFixed(0)).join(' ')})`);
      // Round by round (ours runs in this process: its first rounds pay V8's warm-up, the later ones not).
      const perRound = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(' ');
      console.log(`    CPU per round (ms): ours ${perRound(trace.cpu.ours)}; QSD ${perRound(trace.cpu.qsd)}`);
      for (const k of ['ready', 'pivot', 'cpu', 'sys', 'flush'] as const) for (const side of ['qsd', 'ours'] as const) trace[k][side].length = 0;
    };
    if (!process.argv.includes('--no-idle')) {
    const r = await sideBySide(rounds, qsd, ours);
    // Time ratio as a speed ratio: QSD's time over ours (≥ 1: we are at least as fast).
    row('blockdev-mirror sync=full until null', `${r.subject.toFixed(0)} ms`, `${r.baseline.toFixed(0)} ms`, r.baseline / r.subject, r.rounds.map((x) => 1 / x).sort((a, b) => a - b));
    details();
    }
    if (process.argv.includes('--no-guest')) return;
    // The same with a guest writing 1,000 IOPS over NBD meanwhile (fio), pivoted under it.
    const qsdIops: number[] = [];
    const ourIops: number[] = [];
    const qsdLoaded = async () => {
      const tgt = freshTarget('tgt-qsd.qcow2');
      const sock = path.join(dir, 'qsd-nbd.sock');
      const d = await startQsd(dir, [
        '--blockdev', `driver=file,node-name=src-file,filename=${src}`, '--blockdev', 'driver=qcow2,node-name=src,file=src-file',
        '--blockdev', `driver=file,node-name=tgt-file,filename=${tgt}`, '--blockdev', 'driver=qcow2,node-name=tgt,file=tgt-file',
        '--nbd-server', `addr.type=unix,addr.path=${sock}`,
      ]);
      try {
        return await underLoad(d.qmp, sock, qsdIops, 'qsd', qsdPid(dir));
      } finally {
        await d.stop();
      }
    };
    const oursLoaded = async () => {
      const tgt = freshTarget('tgt-ours.qcow2');
      const sock = path.join(dir, 'our-nbd.sock');
      const layer = new BlockLayer();
      const nbd = new NbdServer();
      await nbd.listen({ path: sock });
      await layer.openDrive({ id: 'disk0', driver: 'qcow2', nodeName: 'src', file: { driver: 'file', filename: src } });
      timeFlushes(await layer.addNode({ driver: 'qcow2', nodeName: 'tgt', file: { driver: 'file', filename: tgt } }));
      const d = await startOurQmp(layer, dir, { exports: new NbdExportManager(layer, nbd) });
      try {
        return await underLoad(d.qmp, sock, ourIops, 'ours', null);
      } finally {
        await d.stop();
        await nbd.close();
        await layer.close();
      }
    };
    const l = await sideBySide(rounds, qsdLoaded, oursLoaded);
    row('  … with a guest at 1,000 write IOPS (fio/NBD)', `${l.subject.toFixed(0)} ms`, `${l.baseline.toFixed(0)} ms`, l.baseline / l.subject, l.rounds.map((x) => 1 / x).sort((a, b) => a - b));
    details();
    console.log(`  guest IOPS during the mirror (limit 1000): ours ${med(ourIops).toFixed(0)}, QSD ${med(qsdIops).toFixed(0)} (rounds: ours ${ourIops.map((x) => x.toFixed(0)).join(' ')}; QSD ${qsdIops.map((x) => x.toFixed(0)).join(' ')})`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
