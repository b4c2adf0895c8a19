/**
 * NBD server speed: our NbdServer vs qemu-nbd serving the same raw file, both measured with the
 * same client (fio's nbd engine) in the same run: 4 KiB random reads at QD32, 1 MiB sequential
 * reads and writes at QD8. Like with like: both sides use the page cache (qemu-nbd
 * --cache=writeback, its default; our file driver never opens O_DIRECT) and the same I/O engine
 * (qemu-nbd --aio=E, our file driver aio: E), once per engine. Besides the rate, each side's CPU
 * time per request (all threads of the server process) is printed, and that of the main thread
 * alone (the event loop: parsing, the Drive, replies; the rest is the I/O threads): on a shared
 * machine they move less than the rate does.
 * What limits 1 MiB writes (2026-11): Node reads a socket 64 KiB at a time into a fresh
 * ArrayBuffer per read, and that external memory makes V8 run a mark-compact for about every
 * 64 MiB received (--trace-gc: "external memory pressure"), then each chunk is copied into the
 * payload; qemu-nbd receives straight into its request buffer. A server socket cannot be given
 * its own read buffer (net.Server has no `onread`).
 * Run: `npx tsx bench/nbd.ts [--seconds N] [--rounds N] [--aio threads|io_uring|both] [--only randread|read|write]`
 * (or `npm run bench -- --full`).
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { BlockLayer, NbdServer } from '../src/index.js';
import { waitForPort } from './port.js';
import { fmtRate, median } from './util.js';

const run = promisify(execFile);
const SIZE = 256 * 1024 * 1024;

interface Scenario {
  label: string;
  rw: 'randread' | 'read' | 'write';
  bs: string;
  iodepth: number;
}
const SCENARIOS: Scenario[] = [
  { label: '4 KiB random reads, QD32 (IOPS)', rw: 'randread', bs: '4k', iodepth: 32 },
  { label: '1 MiB sequential reads, QD8 (MB/s)', rw: 'read', bs: '1M', iodepth: 8 },
  { label: '1 MiB sequential writes, QD8 (MB/s)', rw: 'write', bs: '1M', iodepth: 8 },
];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

type Aio = 'threads' | 'io_uring';

/** One fio run against an NBD URI: the rate (IOPS for 4 KiB jobs, MB/s for 1 MiB ones) and the requests done. */
async function fio(uri: string, s: Scenario, seconds: number): Promise<{ rate: number; requests: number }> {
  const { stdout } = await run('fio', [
    '--name=nbdbench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${s.rw}`,
    `--bs=${s.bs}`,
    `--iodepth=${s.iodepth}`,
    `--size=${SIZE}`,
    `--runtime=${seconds}`,
    '--time_based',
    '--output-format=json',
  ], { maxBuffer: 16 << 20 });
  const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: { read: { iops: number; bw_bytes: number }; write: { iops: number; bw_bytes: number } }[] }).jobs[0];
  const side = s.rw === 'write' ? job.write : job.read;
  return { rate: s.bs === '4k' ? side.iops : side.bw_bytes / 1e6, requests: side.iops * seconds };
}

/** One measured run: the rate and the server's CPU microseconds per request (all threads, the main thread). */
interface Sample {
  rate: number;
  cpuUs: number;
  mainCpuUs: number;
}

/** The server's CPU seconds used so far: all its threads, and its main thread alone. */
interface CpuMeters {
  all: () => number;
  main: () => number;
}

/** CPU seconds (user + system) used so far by process `pid` (all threads), or by its main thread alone, from /proc. */
function procCpuSeconds(pid: number, mainThread = false): number {
  const stat = fs.readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}
const CLOCK_TICKS = 100;

/** This process's CPU seconds (the server runs in it; fio is a child with its own). */
function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function measured(cpu: CpuMeters, uri: string, s: Scenario, seconds: number): Promise<Sample> {
  const before = cpu.all();
  const mainBefore = cpu.main();
  const r = await fio(uri, s, seconds);
  const perRequest = (used: number) => (r.requests > 0 ? (used * 1e6) / r.requests : Number.NaN);
  return { rate: r.rate, cpuUs: perRequest(cpu.all() - before), mainCpuUs: perRequest(cpu.main() - mainBefore) };
}

/** Serves `file` with qemu-nbd for the duration of `fn`. */
async function withQemuNbd<T>(file: string, aio: Aio, fn: (uri: string, cpu: CpuMeters) => Promise<T>): Promise<T> {
  const port = await freePort();
  const p = spawn('qemu-nbd', ['-f', 'raw', '-x', 'disk', '-b', '127.0.0.1', '-p', String(port), '--persistent', '--shared=8', '--cache=writeback', `--aio=${aio}`, file], { stdio: 'ignore' });
  try {
    await waitForPort(port, 5000);
    const pid = p.pid as number;
    return await fn(`nbd://127.0.0.1:${port}/disk`, { all: () => procCpuSeconds(pid), main: () => procCpuSeconds(pid, true) });
  } finally {
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
  }
}

/** Serves `file` with our NbdServer (raw over file, one Drive) for the duration of `fn`. */
async function withOurs<T>(file: string, aio: Aio, fn: (uri: string, cpu: CpuMeters) => Promise<T>): Promise<T> {
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: file, aio } });
  const used = (drive.node.children.get('file')?.info() as { aio?: string } | undefined)?.aio;
  if (used !== aio) throw new Error(`file driver: asked for aio ${aio}, got ${used}`);
  const server = new NbdServer({ exports: [{ name: 'disk', drive }] });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  try {
    return await fn(`nbd://127.0.0.1:${(address as { port: number }).port}/disk`, { all: selfCpuSeconds, main: () => procCpuSeconds(process.pid, true) });
  } finally {
    await server.close();
    await layer.close();
  }
}

/** Ours and qemu-nbd alternately (so neither always runs on a warmer or cooler machine); medians. */
async function pair(file: string, aio: Aio, s: Scenario, seconds: number, rounds: number) {
  const ours: Sample[] = [];
  const qemu: Sample[] = [];
  const runQemu = async () => qemu.push(await withQemuNbd(file, aio, (uri, cpu) => measured(cpu, uri, s, seconds)));
  const runOurs = async () => ours.push(await withOurs(file, aio, (uri, cpu) => measured(cpu, uri, s, seconds)));
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) {
      await runQemu();
      await runOurs();
    } else {
      await runOurs();
      await runQemu();
    }
  }
  const m = (xs: Sample[], k: keyof Sample) => median(xs.map((x) => x[k]));
  const result = {
    ours: m(ours, 'rate'),
    qemu: m(qemu, 'rate'),
    ratio: m(ours, 'rate') / m(qemu, 'rate'),
    oursCpuUsPerRequest: m(ours, 'cpuUs'),
    qemuCpuUsPerRequest: m(qemu, 'cpuUs'),
    oursMainThreadCpuUsPerRequest: m(ours, 'mainCpuUs'),
    qemuMainThreadCpuUsPerRequest: m(qemu, 'mainCpuUs'),
    rounds: { ours: ours.map((x) => x.rate), qemu: qemu.map((x) => x.rate) },
  };
  const unit = s.bs === '4k' ? ' IOPS' : ' MB/s';
  console.log(
    `  ${s.label.padEnd(36)} ${fmtRate(result.ours, unit).padStart(11)} vs ${fmtRate(result.qemu, unit).padStart(11)}  ratio ${result.ratio.toFixed(3)}` +
      `   CPU/req ${result.oursCpuUsPerRequest.toFixed(1)} vs ${result.qemuCpuUsPerRequest.toFixed(1)} µs` +
      ` (main thread ${result.oursMainThreadCpuUsPerRequest.toFixed(1)} vs ${result.qemuMainThreadCpuUsPerRequest.toFixed(1)} µs)`,
  );
  return result;
}

export async function nbdBench(
  seconds = 5,
  options: { rounds?: number; engines?: readonly Aio[]; only?: Scenario['rw'] } = {},
): Promise<Record<string, unknown>> {
  const rounds = options.rounds ?? 3;
  const engines = options.engines ?? (['threads', 'io_uring'] as const);
  for (const tool of ['fio', 'qemu-nbd']) {
    try {
      await run(tool, ['--version']);
    } catch {
      console.log(`nbd server: skipped (${tool} not installed)`);
      return { skipped: true };
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-nbd-bench-'));
  const file = path.join(dir, 'disk.raw');
  fs.writeFileSync(file, Buffer.alloc(SIZE, 0x5a)); // fully allocated, in the page cache
  const results: Record<string, unknown> = {};
  console.log(`nbd server: fio --ioengine=nbd against ours and qemu-nbd on the same ${SIZE >> 20} MiB raw file (page cache), ${seconds} s each, median of ${rounds}`);
  try {
    for (const aio of engines) {
      console.log(` aio=${aio} (ours: file driver aio '${aio}'; qemu-nbd --aio=${aio} --cache=writeback)`);
      for (const s of SCENARIOS) {
        if (options.only !== undefined && s.rw !== options.only) continue;
        results[`${s.label} [aio=${aio}]`] = await pair(file, aio, s, seconds, rounds);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const aio = arg('--aio') ?? 'both';
  if (!['threads', 'io_uring', 'both'].includes(aio)) throw new Error(`--aio: '${aio}' is not threads, io_uring or both`);
  const only = arg('--only');
  if (only !== undefined && !['randread', 'read', 'write'].includes(only)) throw new Error(`--only: '${only}' is not randread, read or write`);
  await nbdBench(Number(arg('--seconds') ?? 5), {
    rounds: Number(arg('--rounds') ?? 3),
    engines: aio === 'both' ? ['threads', 'io_uring'] : [aio as Aio],
    ...(only === undefined ? {} : { only: only as Scenario['rw'] }),
  });
}
