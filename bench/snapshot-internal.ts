/**
 * Internal snapshots of a 10 GiB qcow2 with 50 % data (#24: "create/delete ≤ QSD's time"): a
 * snapshot raises the refcount of every cluster the image maps and clears COPIED in every L2
 * entry; deleting it undoes both. The image: qemu-img create -o preallocation=metadata (every
 * cluster mapped, none written: the file stays sparse), then qemu-io discards every other MiB
 * (81,920 of 163,840 clusters left mapped). Data content plays no part in this work.
 *
 * QMP: `blocklayer serve` (the bundled command, as installed) and qemu-storage-daemon, each a
 * process with its own copy of the image, both started before the clock runs; each round runs
 * blockdev-snapshot-internal-sync then blockdev-snapshot-delete-internal-sync on both daemons,
 * which side first alternating. Printed: wall ms (median, the median of paired ratios, their
 * range) and each daemon's CPU ms per operation (/proc/PID/stat utime+stime, 10 ms ticks:
 * summed over the rounds, then divided). Ratio = ours / QSD (below 1: ours is faster).
 *
 * CLI: `blocklayer snapshot -c/-d` vs `qemu-img snapshot -c/-d`, each a fresh process (start-up
 * included), CPU time of the child (user + system) beside the wall time. Our processes run in
 * bench/util.ts's commandEnv() (without NODE_EXTRA_CA_CERTS, which this machine sets).
 *
 * Both images must pass qemu-img check at the end.
 *
 *   npx tsx bench/snapshot-internal.ts [--rounds N]
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildCli } from '../scripts/build-cli.js';
import { startQemuDaemon, stopPid } from '../tests/helpers/qemu-daemons.js';
import { QmpClient } from '../tests/helpers/qmp-client.js';
import { commandEnv, median, row } from './util.js';

const SIZE = 10 * 2 ** 30;
const MiB = 2 ** 20;

/** 10 GiB, every cluster mapped, then every other MiB discarded (its clusters freed). */
function makeImage(file: string): void {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', file, String(SIZE)]);
  const cmds = Array.from({ length: SIZE / MiB / 2 }, (_, i) => `discard ${(2 * i + 1) * MiB} ${MiB}`).join('\n');
  execFileSync('qemu-io', ['-f', 'qcow2', file], { input: `${cmds}\n`, stdio: ['pipe', 'ignore', 'inherit'] });
}

/** A sparse copy (the image's file is 10 GiB long, a few MiB on disk). */
function copySparse(from: string, to: string): void {
  execFileSync('cp', ['--sparse=always', from, to]);
}

/** CPU ms (user + system, all threads) of process `pid` so far. */
function cpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * (1000 / TICKS);
}
const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

interface Daemon {
  qmp: QmpClient;
  pid: number;
  stop(): Promise<void>;
}

const blockdevs = (image: string) => ['--blockdev', `driver=file,node-name=disk-file,filename=${image}`, '--blockdev', 'driver=qcow2,node-name=disk,file=disk-file'];

async function startQsd(dir: string, image: string): Promise<Daemon> {
  const sock = path.join(dir, 'qsd.qmp');
  const pid = startQemuDaemon('qemu-storage-daemon', [...blockdevs(image), '--chardev', `socket,id=m,path=${sock},server=on,wait=off`, '--monitor', 'chardev=m'], dir);
  const qmp = await QmpClient.connect(sock);
  return {
    qmp,
    pid,
    stop: async () => {
      qmp.close();
      await stopPid(pid);
    },
  };
}

async function startOurs(cli: string, env: NodeJS.ProcessEnv, dir: string, image: string): Promise<Daemon> {
  const sock = path.join(dir, 'ours.qmp');
  const child: ChildProcess = spawn(process.execPath, [cli, 'serve', ...blockdevs(image), '--chardev', `socket,id=m,path=${sock},server=on,wait=off`, '--monitor', 'chardev=m'], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const qmp = await QmpClient.connect(sock).catch((e: Error) => {
    child.kill('SIGTERM');
    throw new Error(`blocklayer serve: ${e.message}: ${err.trim()}`);
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    qmp,
    pid: child.pid!,
    stop: async () => {
      qmp.close();
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Wall ms of one QMP command on `d`, its CPU ms added to `cpu`. */
async function timedCommand(d: Daemon, execute: string, args: Record<string, unknown>, cpu: number[]): Promise<number> {
  const c0 = cpuMs(d.pid);
  const t0 = performance.now();
  await d.qmp.ok(execute, args);
  const ms = performance.now() - t0;
  cpu.push(cpuMs(d.pid) - c0);
  return ms;
}

/** Wall ms of one process run under GNU time, and its CPU ms (user + system) as time prints them on stderr. */
function timedProcess(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ ms: number; cpu: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const ms = performance.now() - t0;
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${err.trim()}`));
      resolve({ ms, cpu: cpuFromTime(err) });
    });
  });
}

/** `/usr/bin/time -f '%U %S'`'s last line → ms. */
function cpuFromTime(stderr: string): number {
  const m = /([\d.]+) ([\d.]+)\s*$/.exec(stderr.trim());
  return m ? (Number(m[1]) + Number(m[2])) * 1000 : Number.NaN;
}

interface Pair {
  ours: number[];
  theirs: number[];
  ratios: number[];
}
const pair = (): Pair => ({ ours: [], theirs: [], ratios: [] });

function report(label: string, p: Pair, cpuOurs: number[], cpuTheirs: number[], unit = 'ms'): Record<string, unknown> {
  const ratios = [...p.ratios].sort((a, b) => a - b);
  row(`${label} (${unit}, lower is better)`, median(p.ours).toFixed(1), median(p.theirs).toFixed(1), median(ratios), ratios);
  const sum = (l: number[]) => l.reduce((a, b) => a + b, 0);
  const co = sum(cpuOurs) / cpuOurs.length;
  const ct = sum(cpuTheirs) / cpuTheirs.length;
  console.log(`  ${'  CPU ms per operation, ours vs theirs'.padEnd(46)} ${co.toFixed(1).padStart(12)}  vs ${ct.toFixed(1).padStart(12)}  ratio ${(co / ct).toFixed(3)}`);
  return { ours: median(p.ours), theirs: median(p.theirs), ratio: median(ratios), rounds: ratios, cpuOurs: co, cpuTheirs: ct, unit: `${unit} (lower is better)` };
}

export async function snapshotInternalBench(rounds = 7) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-snapshot-internal-'));
  // the bundle sits two levels under the package (as dist/cli/) so it finds package.json and node_modules
  const outdir = path.join(import.meta.dirname, '..', 'dist', `.snapshot-bench-${process.pid}`);
  try {
    const [cli] = await buildCli(outdir);
    const env = { ...commandEnv(), BLOCKLAYER_COMPILE_CACHE: path.join(dir, 'compile-cache') };
    const orig = path.join(dir, 'orig.qcow2');
    makeImage(orig);
    const mine = path.join(dir, 'ours.qcow2');
    const theirsImage = path.join(dir, 'theirs.qcow2');
    copySparse(orig, mine);
    copySparse(orig, theirsImage);
    const out: Record<string, unknown> = {};

    console.log(`internal snapshots of a 10 GiB qcow2, 50 % mapped (81,920 clusters), ${rounds} rounds; ratio = ours / theirs`);
    const q = await startQsd(dir, theirsImage);
    const o = await startOurs(cli!, env, dir, mine);
    try {
      const create = pair();
      const del = pair();
      const cpu = { createOurs: [] as number[], createTheirs: [] as number[], deleteOurs: [] as number[], deleteTheirs: [] as number[] };
      for (let i = 0; i < rounds; i++) {
        const name = `bench${i}`;
        const both = async (execute: string, p: Pair, co: number[], ct: number[]) => {
          const args = { device: 'disk', name };
          const first = i % 2 === 0;
          const a = first ? await timedCommand(q, execute, args, ct) : 0;
          const b = await timedCommand(o, execute, args, co);
          const t = first ? a : await timedCommand(q, execute, args, ct);
          p.ours.push(b);
          p.theirs.push(t);
          p.ratios.push(b / t);
        };
        await both('blockdev-snapshot-internal-sync', create, cpu.createOurs, cpu.createTheirs);
        await both('blockdev-snapshot-delete-internal-sync', del, cpu.deleteOurs, cpu.deleteTheirs);
      }
      console.log('QMP: blocklayer serve vs qemu-storage-daemon (wall ms per command; CPU of each daemon)');
      out.qmpCreate = report('blockdev-snapshot-internal-sync', create, cpu.createOurs, cpu.createTheirs);
      out.qmpDelete = report('blockdev-snapshot-delete-internal-sync', del, cpu.deleteOurs, cpu.deleteTheirs);
    } finally {
      await o.stop();
      await q.stop();
    }

    const time = (program: string, args: string[], e?: NodeJS.ProcessEnv) => timedProcess('/usr/bin/time', ['-f', '%U %S', program, ...args], e);
    const create = pair();
    const del = pair();
    const cpu = { createOurs: [] as number[], createTheirs: [] as number[], deleteOurs: [] as number[], deleteTheirs: [] as number[] };
    // one run first: writes the command's code cache, as an installed command has it
    await time(process.execPath, [cli!, 'snapshot', '-l', mine], env);
    for (let i = 0; i < rounds; i++) {
      const name = `cli${i}`;
      const both = async (flag: string, p: Pair, co: number[], ct: number[]) => {
        const ours = () => time(process.execPath, [cli!, 'snapshot', flag, name, mine], env);
        const theirs = () => time('qemu-img', ['snapshot', flag, name, theirsImage]);
        const first = i % 2 === 0;
        const a = first ? await theirs() : undefined;
        const b = await ours();
        const t = a ?? (await theirs());
        p.ours.push(b.ms);
        p.theirs.push(t.ms);
        p.ratios.push(b.ms / t.ms);
        co.push(b.cpu);
        ct.push(t.cpu);
      };
      await both('-c', create, cpu.createOurs, cpu.createTheirs);
      await both('-d', del, cpu.deleteOurs, cpu.deleteTheirs);
    }
    console.log('CLI: blocklayer snapshot vs qemu-img snapshot (a process each: wall ms; CPU ms of the process, start-up included)');
    out.cliCreate = report('snapshot -c', create, cpu.createOurs, cpu.createTheirs);
    out.cliDelete = report('snapshot -d', del, cpu.deleteOurs, cpu.deleteTheirs);

    for (const image of [mine, theirsImage]) execFileSync('qemu-img', ['check', '-q', image]);
    console.log('  qemu-img check: both images clean');
    return out;
  } finally {
    fs.rmSync(outdir, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--rounds');
  await snapshotInternalBench(i > 0 ? Number(process.argv[i + 1]) : undefined);
}
