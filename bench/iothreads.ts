/**
 * Both cores (issue #27): `blocklayer serve` with two exports, each in its own iothread, vs one
 * export alone on the main thread; each export gets its own client doing 4 KiB reads at QD32;
 * total IOPS. Paired rounds, alternating, median of the ratios (goal ≥ 1.7× on 2 CPUs).
 *
 * Sections (IOTHREADS_BENCH_SECTIONS, default all three):
 * - `cost`: what each client costs, against one export on the main thread: fio's nbd engine as
 *   before; fio with its own bookkeeping cut (gtod_reduce, no random map, no latency stats,
 *   thread mode, batched submit); nbdcopy to null: (libnbd, sequential, re-run until the time is
 *   up); bench/nbd-load.c, a small C client built here with `cc` that writes the requests a batch
 *   of replies frees in one write(2) and reads replies in large chunks. Client CPU is this
 *   process's children's CPU (cutime+cstime) over the run, the same for all four.
 * - `fio`: the rows with fio as before: ours (two iothreads vs one export on main), two serve
 *   processes vs one, two iothreads vs two processes (1.0: threads cost what processes do), two
 *   qemu-nbd vs one, qemu-storage-daemon with two iothreads (QEMU 7.2's daemon aborts when a
 *   client of an export in an iothread leaves: that row says so and has no figure).
 * - `cheap`: the same rows with the cheapest client (nbd-load; nbdcopy without a C compiler).
 * Every row prints the server's and the client's CPU per request, the server's busiest threads
 * (% of a core; for ours, the main thread's share), and the rate that CPU per request allows on
 * two otherwise idle CPUs: server + client within two cores, the busiest server thread within one.
 * On a loaded machine (seven helpers on 2 CPUs, load average 14–26 during these runs) wall-clock
 * ratios measure the scheduler's share as much as the server (round ratios 0.5–4.3); the
 * CPU-derived bound does not move with the load as much.
 *
 * Why the client matters: one export is bounded by its busiest server thread (b µs per request)
 * and two exports by two cores' worth of server and client CPU, so two can give at most
 * (2/(s2 + f)) / (1/b1). Measured (aio=threads, load 14–26): fio costs f = 30–44 µs per request,
 * fio lean 19–25, nbdcopy 17–21 (all libnbd, one send and receive per request), nbd-load 1.5–3.4;
 * the server s = 23–40 µs. With fio the client takes the second core: 2s/(s+f) ≈ 1.2. With
 * nbd-load the client is out of the way, and what is left is the server itself: one export on the
 * main thread spends b1 ≈ 12–20 µs per request on its main thread and about as much again in
 * libuv's thread pool (the file driver's preads, their wake-ups and completions), so at its bound
 * it already keeps ~1.8 cores busy; two iothreads cost s2 ≈ 20–29 µs per request together, and
 * the bound ratio is 1.1–1.3. IOTHREADS_BENCH_AIO=io_uring takes the pool off the path (every
 * server, qemu-nbd too): one export then costs 4.4 µs per request (4.1 on its main thread), two
 * iothreads 4.8, nbd-load 1.0, so the bound is 2 × 4.1 / (4.8 + 1.0) ≈ 1.4 (wall clock 123k vs
 * 166k IOPS, ratio 1.65, rounds 0.78–3.27, load 14). Even a server whose two threads cost what
 * one does would give 2 × 4.1 / (4.4 + 1.0) ≈ 1.5: at 1.0 µs the client is still a fifth of the
 * server, and 1.7 needs it below 0.8 µs.
 * IOTHREADS_BENCH_CEILING=0 leaves the ceiling rows out.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { waitForPort } from './port.js';
import { fmtRate, median, row, sideBySide } from './util.js';

const ROOT = path.join(import.meta.dirname, '..');
const TSX = path.join(ROOT, 'node_modules/tsx/dist/loader.mjs');
const SECONDS = Number(process.env.IOTHREADS_BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.IOTHREADS_BENCH_ROUNDS ?? 3);
const CEILING = process.env.IOTHREADS_BENCH_CEILING !== '0';
/** Which sections run: `cost` (each client's CPU per request), `fio` (the rows with fio), `cheap` (the rows with the cheapest client). */
const SECTIONS = (process.env.IOTHREADS_BENCH_SECTIONS ?? 'cost,fio,cheap').split(',');
/** The file driver's engine (QEMU `aio=`) for every server, ours and QEMU's: threads (the default) or io_uring. */
const AIO = process.env.IOTHREADS_BENCH_AIO ?? 'threads';
const SIZE = 64 * 1024 * 1024;
const BS = 4096;
const DEPTH = 32;
const TICKS = 100;

function statFields(file: string): string[] {
  const stat = fs.readFileSync(file, 'utf8');
  return stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
}

/** utime + stime of a process (all its threads), or of one thread with `tid`, in seconds. */
function cpuSeconds(pid: number, tid?: number): number {
  const fields = statFields(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`);
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

/** cutime + cstime of this process: the CPU of its children that have exited and been waited for, seconds. */
function childrenCpuSeconds(): number {
  const fields = statFields('/proc/self/stat');
  return (Number(fields[13]) + Number(fields[14])) / TICKS;
}

/** CPU seconds of each thread of a process, by thread id. */
function threadCpu(pid: number): Map<number, number> {
  const m = new Map<number, number>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      m.set(Number(tid), cpuSeconds(pid, Number(tid)));
    } catch {
      // The thread ended in between.
    }
  }
  return m;
}

/** An export a client reads: 127.0.0.1:port, by name. */
interface Target {
  port: number;
  name: string;
}

/** Servers started for one side of a round: their processes, the exports the clients read, how to stop them. */
interface Started {
  pids: number[];
  targets: Target[];
  stop: () => Promise<void>;
  /** What the servers wrote to stderr (why one of them failed). */
  output: () => string;
}

/** A server process of a side. */
interface Server {
  pid: number;
  port: number;
  stop: () => Promise<void>;
  output: () => string;
}

/** A child that exits with the side; `ready` resolves once `isReady` says so, rejects if the child exits first. */
function child(cmd: string, args: string[]): { pid: number; output: () => string; exited: Promise<void>; stop: () => Promise<void> } {
  const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => c.on('exit', () => resolve()));
  return {
    pid: c.pid!,
    output: () => err,
    exited,
    stop: async () => {
      c.kill('SIGTERM');
      await exited;
    },
  };
}

async function startServe(args: string[]): Promise<Server> {
  const c = child(process.execPath, ['--import', TSX, path.join(ROOT, 'src/cli/main.ts'), 'serve', ...args]);
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /listening on [\d.]+:(\d+)/.exec(c.output());
      if (m) {
        clearInterval(timer);
        resolve(Number(m[1]));
      }
    }, 20);
    void c.exited.then(() => {
      clearInterval(timer);
      reject(new Error(`serve exited: ${c.output()}`));
    });
  });
  return { pid: c.pid, port, stop: c.stop, output: c.output };
}

/** A TCP port free right now (QEMU's tools cannot be asked to pick one and say which). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Waits until something accepts on the port (a QEMU tool has opened its export), or the process exits. */
async function accepting(port: number, exited: Promise<void>, output: () => string): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  await waitForPort(port, 10_000, () => gone, output);
}

async function startQemu(cmd: string, args: (port: number) => string[]): Promise<Server> {
  const port = await freePort();
  const c = child(cmd, args(port));
  await accepting(port, c.exited, c.output);
  return { pid: c.pid, port, stop: c.stop, output: c.output };
}

/** Reads of one export for SECONDS: how many were answered, over how long. */
interface ClientRun {
  requests: number;
  seconds: number;
}

/** A load generator: runs against one export; its CPU is counted when it has exited (children's CPU of this process). */
interface Client {
  name: string;
  run: (t: Target) => Promise<ClientRun>;
}

/** Runs a command to its end; its stdout. */
function runCommand(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    c.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${err.trim().split('\n').at(-1) ?? ''}`))));
  });
}

const uri = (t: Target) => `nbd://127.0.0.1:${t.port}/${t.name}`;

/** fio's nbd engine, random reads; `lean` cuts fio's own bookkeeping (timestamps, latency stats, random map) and runs the job as a thread. */
function fioClient(lean: boolean): Client {
  const extra = lean ? ['--gtod_reduce=1', '--norandommap', '--randrepeat=0', '--disable_lat=1', '--disable_clat=1', '--disable_slat=1', '--thread', `--iodepth_batch_submit=${DEPTH}`, '--iodepth_batch_complete_min=1'] : [];
  return {
    name: lean ? 'fio (lean)' : 'fio',
    run: async (t) => {
      const args = ['--name=r', '--ioengine=nbd', `--uri=${uri(t)}`, '--rw=randread', `--bs=${BS}`, `--iodepth=${DEPTH}`, `--runtime=${SECONDS}`, '--time_based', '--output-format=json', ...extra];
      const out = await runCommand('fio', args);
      const job = (JSON.parse(out.slice(out.search(/^\{/m))) as { jobs: { read: { total_ios: number }; job_runtime: number }[] }).jobs[0]!;
      return { requests: job.read.total_ios, seconds: job.job_runtime / 1000 };
    },
  };
}

/** libnbd's nbdcopy to null:, sequential reads, one connection; copies the whole export, so it is run again until SECONDS have passed. */
const nbdcopyClient: Client = {
  name: 'nbdcopy',
  run: async (t) => {
    const t0 = performance.now();
    let requests = 0;
    while (performance.now() - t0 < SECONDS * 1000) {
      await runCommand('nbdcopy', [`--request-size=${BS}`, `--requests=${DEPTH}`, '--connections=1', '--threads=1', '--no-extents', uri(t), 'null:']);
      requests += SIZE / BS;
    }
    return { requests, seconds: (performance.now() - t0) / 1000 };
  },
};

/** bench/nbd-load.c, built into `dir` with the system's C compiler; undefined without one. */
async function nbdLoadClient(dir: string): Promise<Client | undefined> {
  if (!hasCommand('cc')) return undefined;
  const bin = path.join(dir, 'nbd-load');
  await runCommand('cc', ['-O2', '-o', bin, path.join(import.meta.dirname, 'nbd-load.c')]);
  return {
    name: 'nbd-load (C)',
    run: async (t) => {
      const [requests, seconds] = (await runCommand(bin, ['127.0.0.1', String(t.port), t.name, String(SECONDS), String(DEPTH), String(BS)])).trim().split(' ').map(Number);
      return { requests: requests!, seconds: seconds! };
    },
  };
}

/** CPU per request (µs) of each run of one side. */
interface CpuLog {
  server: number[];
  /** The server's main thread alone (ours only: its exports in iothreads should leave it idle). */
  main: number[];
  client: number[];
  /** The servers' busiest threads, % of one core over the run, busiest first. */
  busiest: number[][];
  /** The servers' busiest thread's CPU per request (µs): the bound one core puts on the side. */
  bottleneck: number[];
  /** Clients run at once (one per export). */
  clients: number;
}

const cpuLog = (): CpuLog => ({ server: [], main: [], client: [], busiest: [], bottleneck: [], clients: 1 });

/** Starts a side, runs the client on each of its exports at once, logs CPU per request; total requests per second. */
async function measure(client: Client, start: () => Promise<Started>, log: CpuLog, threadsOf?: number): Promise<number> {
  const s = await start();
  try {
    const c0 = s.pids.map((p) => cpuSeconds(p));
    const own = threadsOf === undefined ? undefined : s.pids[threadsOf]!;
    const t0 = s.pids.map(threadCpu);
    const k0 = childrenCpuSeconds();
    const w0 = performance.now();
    const runs = await Promise.all(s.targets.map((t) => client.run(t))).catch((e: Error) => {
      throw new Error(`${e.message}; server: ${s.output().trim().split('\n').at(-1) ?? ''}`);
    });
    const wall = (performance.now() - w0) / 1000;
    const clientCpu = childrenCpuSeconds() - k0;
    const requests = runs.reduce((a, r) => a + r.requests, 0);
    const server = s.pids.reduce((a, p, i) => a + cpuSeconds(p) - c0[i]!, 0);
    log.server.push((server / requests) * 1e6);
    log.client.push((clientCpu / requests) * 1e6);
    const t1 = s.pids.map(threadCpu);
    // Thread ids are unique across processes: one list of every server thread's CPU over the run.
    const used = t1.flatMap((m, i) => [...m].map(([tid, c]) => c - (t0[i]!.get(tid) ?? 0))).sort((a, b) => b - a);
    log.busiest.push(used.slice(0, 3).map((c) => (c / wall) * 100));
    log.bottleneck.push(((used[0] ?? 0) / requests) * 1e6);
    log.clients = s.targets.length;
    if (own !== undefined) log.main.push((((t1[threadsOf!]!.get(own) ?? 0) - (t0[threadsOf!]!.get(own) ?? 0)) / requests) * 1e6);
    return runs.reduce((a, r) => a + r.requests / r.seconds, 0);
  } finally {
    await s.stop();
  }
}

/** Several servers started as one side. */
async function together(starts: (() => Promise<Server>)[], names: string[]): Promise<Started> {
  const servers = await Promise.all(starts.map((f) => f()));
  return {
    pids: servers.map((s) => s.pid),
    targets: servers.map((s, i) => ({ port: s.port, name: names[i]! })),
    stop: async () => {
      await Promise.all(servers.map((s) => s.stop()));
    },
    output: () => servers.map((s) => s.output()).join(''),
  };
}

function hasCommand(cmd: string): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((d) => fs.existsSync(path.join(d, cmd)));
}

const us = (xs: number[]) => (xs.length === 0 ? '-' : median(xs).toFixed(1));
const load = () => os.loadavg()[0]!.toFixed(2);

/** The median of each rank of the busiest threads, as "97 % / 95 % / 12 %". */
function busiest(log: CpuLog): string {
  const n = Math.min(...log.busiest.map((b) => b.length));
  return Array.from({ length: n }, (_, i) => `${median(log.busiest.map((b) => b[i]!)).toFixed(0)} %`).join(' / ');
}

/**
 * Requests per second a side could reach on two otherwise idle CPUs, from its CPU per request
 * alone: no more than two cores' worth of server and client CPU, no more than one core for the
 * server's busiest thread, no more than one core per client. Wall-clock rates on a loaded machine
 * measure the scheduler's share as much as the server; this does not depend on the load.
 */
function idleBound(log: CpuLog): number {
  const s = median(log.server);
  const f = median(log.client);
  return Math.min(2 / (s + f), 1 / median(log.bottleneck), log.clients / f) * 1e6;
}

/** One paired row (`two` vs `one`) and its CPU line; the result for the JSON. */
async function pairedRow(client: Client, label: string, one: () => Promise<Started>, two: () => Promise<Started>, threadsOf?: number): Promise<Record<string, unknown>> {
  const c = { one: cpuLog(), two: cpuLog() };
  const r = await sideBySide(
    ROUNDS,
    () => measure(client, one, c.one, threadsOf),
    () => measure(client, two, c.two, threadsOf),
  );
  row(label, `${fmtRate(r.subject)} IOPS`, `${fmtRate(r.baseline)} IOPS`, r.ratio, r.rounds);
  const bound = { two: idleBound(c.two), one: idleBound(c.one) };
  console.log(`    CPU per request, µs: server ${us(c.two.server)} + client ${us(c.two.client)} (two) vs server ${us(c.one.server)} + client ${us(c.one.client)} (one); busiest server thread ${us(c.two.bottleneck)} vs ${us(c.one.bottleneck)}`);
  console.log(`    busiest server threads, % of a core: ${busiest(c.two)} (two) vs ${busiest(c.one)} (one); on 2 idle CPUs that CPU allows ${fmtRate(bound.two)} vs ${fmtRate(bound.one)} IOPS, ratio ${(bound.two / bound.one).toFixed(3)}`);
  const result: Record<string, unknown> = {
    ...r,
    cpuUsPerRequest: { two: { server: median(c.two.server), client: median(c.two.client), busiestThread: median(c.two.bottleneck) }, one: { server: median(c.one.server), client: median(c.one.client), busiestThread: median(c.one.bottleneck) } },
    idleBound: { ...bound, ratio: bound.two / bound.one },
  };
  if (threadsOf !== undefined) {
    console.log(`    of which the main thread, µs per request: ${us(c.two.main)} (two) vs ${us(c.one.main)} (one)`);
    result.mainThreadUsPerRequest = { two: median(c.two.main), one: median(c.one.main) };
  }
  return result;
}

/** The sides every client's rows are built from. */
interface Sides {
  one: () => Promise<Started>;
  iothreads: () => Promise<Started>;
  serveTwo: () => Promise<Started>;
  qemuNbd?: { one: () => Promise<Started>; two: () => Promise<Started> };
  qsd?: { one: () => Promise<Started>; two: () => Promise<Started> };
}

/** Ours (two iothreads vs one export on main) and the ceilings, with one client. */
async function rows(client: Client, sides: Sides, withQsd: boolean): Promise<Record<string, unknown>> {
  console.log(`\n  client ${client.name}, ${BS / 1024} KiB reads at QD${DEPTH} on each export, ${SECONDS} s per side, ${ROUNDS} paired rounds (load average ${load()})`);
  const result: Record<string, unknown> = {};
  result.iothreads = await pairedRow(client, 'two exports in two iothreads vs one on main', sides.one, sides.iothreads, 0);
  if (!CEILING) return result;
  result.serveProcesses = await pairedRow(client, 'ceiling: two serve processes vs one', sides.one, sides.serveTwo);
  // What threads in one process lose (or gain) against two processes, paired: 1.0 is parity.
  result.iothreadsVsProcesses = await pairedRow(client, 'two iothreads vs two serve processes', sides.serveTwo, sides.iothreads);
  if (sides.qemuNbd) result.qemuNbd = await pairedRow(client, 'ceiling: two qemu-nbd vs one', sides.qemuNbd.one, sides.qemuNbd.two);
  else console.log('  ceiling: two qemu-nbd vs one: skipped (no qemu-nbd)');
  if (withQsd && sides.qsd) {
    const label = 'ceiling: qsd two iothreads vs one export';
    try {
      result.qsdIothreads = await pairedRow(client, label, sides.qsd.one, sides.qsd.two);
    } catch (e) {
      // QEMU 7.2's daemon aborts when a client of an export in an iothread leaves (blockdev-nbd.c:62, nbd_blockdev_client_closed).
      console.log(`  ${label}: failed, no figure (${(e as Error).message})`);
      result.qsdIothreads = { failed: (e as Error).message };
    }
  }
  console.log(`  (load average ${load()})`);
  return result;
}

/** Each client's CPU per request against one export on the main thread (unpaired: medians of ROUNDS runs). */
async function clientCost(clients: Client[], one: () => Promise<Started>): Promise<Record<string, unknown>> {
  console.log(`\n  what each client costs: one export on the main thread, ${SECONDS} s, median of ${ROUNDS} runs (load average ${load()})`);
  const result: Record<string, unknown> = {};
  for (const client of clients) {
    const log = cpuLog();
    const rates: number[] = [];
    for (let i = 0; i < ROUNDS; i++) rates.push(await measure(client, one, log));
    const c = median(log.client);
    const s = median(log.server);
    console.log(`  ${client.name.padEnd(14)} ${fmtRate(median(rates)).padStart(7)} IOPS   client ${c.toFixed(1).padStart(5)} µs + server ${s.toFixed(1).padStart(5)} µs per request   two exports can give at most 2c/(c+f) = ${((2 * s) / (s + c)).toFixed(2)}`);
    result[client.name] = { iops: median(rates), clientUsPerRequest: c, serverUsPerRequest: s };
  }
  return result;
}

export async function iothreadsBench(): Promise<unknown> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-iothreads-bench-'));
  const files = ['a.raw', 'b.raw'].map((f) => path.join(dir, f));
  for (const f of files) fs.writeFileSync(f, Buffer.alloc(SIZE, 1));
  const server = ['--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=0'];
  const blockdev = (i: number) => ['--blockdev', `driver=file,node-name=f${i},filename=${files[i]},aio=${AIO}`, '--blockdev', `driver=raw,node-name=n${i},file=f${i}`];
  const serveOne = (i: number) => () => startServe([...blockdev(i), ...server, '--export', `type=nbd,id=e${i},node-name=n${i},name=${'ab'[i]}`]);
  try {
    const sides: Sides = {
      one: () => together([serveOne(0)], ['a']),
      iothreads: async () => {
        const s = await startServe(['--object', 'iothread,id=io0', '--object', 'iothread,id=io1', ...blockdev(0), ...blockdev(1), ...server, '--export', 'type=nbd,id=e0,node-name=n0,name=a,iothread=io0', '--export', 'type=nbd,id=e1,node-name=n1,name=b,iothread=io1']);
        return { pids: [s.pid], targets: ['a', 'b'].map((name) => ({ port: s.port, name })), stop: s.stop, output: s.output };
      },
      serveTwo: () => together([serveOne(0), serveOne(1)], ['a', 'b']),
    };
    if (hasCommand('qemu-nbd')) {
      const qemuNbd = (i: number) => () => startQemu('qemu-nbd', (port) => ['-f', 'raw', `--aio=${AIO}`, '-x', 'ab'[i]!, '-b', '127.0.0.1', '-p', String(port), '-t', '-e', '4', files[i]!]);
      sides.qemuNbd = { one: () => together([qemuNbd(0)], ['a']), two: () => together([qemuNbd(0), qemuNbd(1)], ['a', 'b']) };
    }
    if (hasCommand('qemu-storage-daemon')) {
      const qsd = (exports: string[], iothreads: string[], nodes: number[]) => () =>
        startQemu('qemu-storage-daemon', (port) => [
          ...iothreads.flatMap((id) => ['--object', `iothread,id=${id}`]),
          ...nodes.flatMap(blockdev),
          '--nbd-server',
          `addr.type=inet,addr.host=127.0.0.1,addr.port=${port}`,
          ...exports.flatMap((x) => ['--export', x]),
        ]);
      sides.qsd = {
        one: () => together([qsd(['type=nbd,id=e0,node-name=n0,name=a'], [], [0])], ['a']),
        two: () => together([qsd(['type=nbd,id=e0,node-name=n0,name=a,iothread=io0', 'type=nbd,id=e1,node-name=n1,name=b,iothread=io1'], ['io0', 'io1'], [0, 1])], ['a', 'b']).then((s) => ({ ...s, targets: ['a', 'b'].map((name) => ({ port: s.targets[0]!.port, name })) })),
      };
    }
    const fio = hasCommand('fio') ? fioClient(false) : undefined;
    const nbdLoad = await nbdLoadClient(dir);
    const clients = [fio, hasCommand('fio') ? fioClient(true) : undefined, hasCommand('nbdcopy') ? nbdcopyClient : undefined, nbdLoad].filter((c): c is Client => c !== undefined);
    console.log(`\niothreads: two exports in two iothreads vs one export on the main thread (aio=${AIO}, load average ${load()}; clients: ${clients.map((c) => c.name).join(', ')})`);
    const result: Record<string, unknown> = {};
    if (SECTIONS.includes('cost')) result.clientCost = await clientCost(clients, sides.one);
    if (SECTIONS.includes('fio') && fio) result.fio = await rows(fio, sides, true);
    // The cheapest client: the one that leaves the server the most of the machine.
    const cheap = nbdLoad ?? (hasCommand('nbdcopy') ? nbdcopyClient : undefined);
    if (SECTIONS.includes('cheap') && cheap) result.cheap = { client: cheap.name, ...(await rows(cheap, sides, false)) };
    return result;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await iothreadsBench();
