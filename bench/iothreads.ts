/**
 * Both cores (issue #27): `blocklayer serve` with two exports, each in its own iothread, vs one
 * export alone on the main thread; fio's nbd engine, 4 KiB random reads at QD32 on each export,
 * total IOPS. Paired rounds, alternating, median of the ratios (goal ≥ 1.7× on 2 CPUs). On a
 * loaded machine the wall-clock rates are noisy: the server's CPU time per request (user+system,
 * all threads, from /proc) is printed too.
 *
 * The ceiling rows say what "both cores" can give on this machine, measured the same way: two
 * `blocklayer serve` processes vs one, two qemu-nbd vs one, one qemu-storage-daemon with two
 * iothreads vs one export on its main loop (QEMU 7.2's daemon aborts when a client of an export in
 * an iothread leaves: that row then says so and has no figure), and, paired, two iothreads vs two
 * serve processes (1.0: threads cost what processes do). The fio clients run on the same CPUs as the server,
 * so none of them reaches 2.0. Each side's CPU per request is printed: the server's (for ours,
 * with its main thread's share) and fio's (its usr+sys over its runtime). IOTHREADS_BENCH_CEILING=0
 * leaves the ceiling rows out.
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
const TICKS = 100;

/** utime + stime of a process (all its threads), or of one thread with `tid`, in seconds. */
function cpuSeconds(pid: number, tid?: number): number {
  const stat = fs.readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

/** Servers started for one side of a round: their processes, the NBD URIs fio reads, how to stop them. */
interface Started {
  pids: number[];
  uris: string[];
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

interface FioResult {
  iops: number;
  /** fio's own CPU time (user+system) over the run, seconds. */
  cpu: number;
}

function fio(uri: string): Promise<FioResult> {
  return new Promise((resolve, reject) => {
    const args = ['--name=r', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', '--iodepth=32', `--runtime=${SECONDS}`, '--time_based', '--output-format=json'];
    const c = spawn('fio', args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.on('close', (code) => {
      if (code !== 0) return reject(new Error(`fio exited ${code}`));
      const job = (JSON.parse(out.slice(out.search(/^\{/m))) as { jobs: { read: { iops: number }; usr_cpu: number; sys_cpu: number; job_runtime: number }[] }).jobs[0]!;
      resolve({ iops: job.read.iops, cpu: ((job.usr_cpu + job.sys_cpu) / 100) * (job.job_runtime / 1000) });
    });
  });
}

/** CPU per request (µs) of each run of one side. */
interface CpuLog {
  server: number[];
  /** The server's main thread alone (ours only: its exports in iothreads should leave it idle). */
  main: number[];
  fio: number[];
}

const cpuLog = (): CpuLog => ({ server: [], main: [], fio: [] });

/** Starts a side, runs fio on each of its exports at once, logs CPU per request; total IOPS. */
async function measure(start: () => Promise<Started>, log: CpuLog, mainThreadOf?: number): Promise<number> {
  const s = await start();
  try {
    const c0 = s.pids.map((p) => cpuSeconds(p));
    const m0 = mainThreadOf === undefined ? 0 : cpuSeconds(s.pids[mainThreadOf]!, s.pids[mainThreadOf]!);
    const runs = await Promise.all(s.uris.map(fio)).catch((e: Error) => {
      throw new Error(`${e.message}; server: ${s.output().trim().split('\n').at(-1) ?? ''}`);
    });
    const requests = runs.reduce((a, r) => a + r.iops, 0) * SECONDS;
    const server = s.pids.reduce((a, p, i) => a + cpuSeconds(p) - c0[i]!, 0);
    log.server.push((server / requests) * 1e6);
    if (mainThreadOf !== undefined) log.main.push(((cpuSeconds(s.pids[mainThreadOf]!, s.pids[mainThreadOf]!) - m0) / requests) * 1e6);
    log.fio.push((runs.reduce((a, r) => a + r.cpu, 0) / requests) * 1e6);
    return runs.reduce((a, r) => a + r.iops, 0);
  } finally {
    await s.stop();
  }
}

/** Several servers started as one side. */
async function together(starts: (() => Promise<Server>)[], names: string[]): Promise<Started> {
  const servers = await Promise.all(starts.map((f) => f()));
  return {
    pids: servers.map((s) => s.pid),
    uris: servers.map((s, i) => `nbd://127.0.0.1:${s.port}/${names[i]}`),
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

/** One ceiling row and its CPU line; the result for the JSON. */
async function ceilingRow(label: string, one: () => Promise<Started>, two: () => Promise<Started>): Promise<unknown> {
  const c = { one: cpuLog(), two: cpuLog() };
  const r = await sideBySide(
    ROUNDS,
    () => measure(one, c.one),
    () => measure(two, c.two),
  );
  row(label, `${fmtRate(r.subject)} IOPS`, `${fmtRate(r.baseline)} IOPS`, r.ratio, r.rounds);
  console.log(`    CPU per request, µs: server ${us(c.two.server)} + fio ${us(c.two.fio)} (two) vs server ${us(c.one.server)} + fio ${us(c.one.fio)} (one)`);
  return { ...r, cpuUsPerRequest: { two: { server: median(c.two.server), fio: median(c.two.fio) }, one: { server: median(c.one.server), fio: median(c.one.fio) } } };
}

export async function iothreadsBench(): Promise<unknown> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-iothreads-bench-'));
  const files = ['a.raw', 'b.raw'].map((f) => path.join(dir, f));
  for (const f of files) fs.writeFileSync(f, Buffer.alloc(64 * 1024 * 1024, 1));
  const server = ['--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=0'];
  const blockdev = (i: number) => ['--blockdev', `driver=file,node-name=f${i},filename=${files[i]}`, '--blockdev', `driver=raw,node-name=n${i},file=f${i}`];
  const serveOne = (i: number) => () => startServe([...blockdev(i), ...server, '--export', `type=nbd,id=e${i},node-name=n${i},name=${'ab'[i]}`]);
  const cpu = { one: cpuLog(), two: cpuLog() };
  try {
    const one = () => measure(() => together([serveOne(0)], ['a']), cpu.one, 0);
    const iothreads = async (): Promise<Started> => {
      const s = await startServe(['--object', 'iothread,id=io0', '--object', 'iothread,id=io1', ...blockdev(0), ...blockdev(1), ...server, '--export', 'type=nbd,id=e0,node-name=n0,name=a,iothread=io0', '--export', 'type=nbd,id=e1,node-name=n1,name=b,iothread=io1']);
      return { pids: [s.pid], uris: [`nbd://127.0.0.1:${s.port}/a`, `nbd://127.0.0.1:${s.port}/b`], stop: s.stop, output: s.output };
    };
    const two = () => measure(iothreads, cpu.two, 0);
    console.log(`\niothreads: fio nbd 4 KiB randread QD32, ${SECONDS} s per side, ${ROUNDS} paired rounds (load average ${os.loadavg()[0]!.toFixed(2)})`);
    const r = await sideBySide(ROUNDS, one, two);
    row('two exports in two iothreads vs one on main', `${fmtRate(r.subject)} IOPS`, `${fmtRate(r.baseline)} IOPS`, r.ratio, r.rounds);
    console.log(`  server CPU per request: ${median(cpu.two.server).toFixed(2)} µs (iothreads) vs ${median(cpu.one.server).toFixed(2)} µs (main thread alone)   goal ratio ≥ 1.7`);
    console.log(`    of which the main thread: ${us(cpu.two.main)} (iothreads) vs ${us(cpu.one.main)} (alone); fio CPU per request ${us(cpu.two.fio)} vs ${us(cpu.one.fio)}`);
    const result: Record<string, unknown> = {
      ...r,
      cpuUsPerRequest: { iothreads: median(cpu.two.server), main: median(cpu.one.server) },
      mainThreadUsPerRequest: { iothreads: median(cpu.two.main), main: median(cpu.one.main) },
      fioUsPerRequest: { iothreads: median(cpu.two.fio), main: median(cpu.one.fio) },
    };
    if (!CEILING) return result;
    console.log(`  the machine's ceiling, the same fio load (load average ${os.loadavg()[0]!.toFixed(2)}):`);
    const ceilings: Record<string, unknown> = {};
    const serveTwo = () => together([serveOne(0), serveOne(1)], ['a', 'b']);
    ceilings.serveProcesses = await ceilingRow('ceiling: two serve processes vs one', () => together([serveOne(0)], ['a']), serveTwo);
    // What threads in one process lose (or gain) against two processes, paired: 1.0 is parity.
    const vs = { procs: cpuLog(), threads: cpuLog() };
    const p = await sideBySide(
      ROUNDS,
      () => measure(serveTwo, vs.procs),
      () => measure(iothreads, vs.threads),
    );
    row('two iothreads vs two serve processes', `${fmtRate(p.subject)} IOPS`, `${fmtRate(p.baseline)} IOPS`, p.ratio, p.rounds);
    console.log(`    CPU per request, µs: server ${us(vs.threads.server)} + fio ${us(vs.threads.fio)} (iothreads) vs server ${us(vs.procs.server)} + fio ${us(vs.procs.fio)} (processes)`);
    ceilings.iothreadsVsProcesses = { ...p, cpuUsPerRequest: { iothreads: { server: median(vs.threads.server), fio: median(vs.threads.fio) }, processes: { server: median(vs.procs.server), fio: median(vs.procs.fio) } } };
    if (hasCommand('qemu-nbd')) {
      const qemuNbd = (i: number) => () => startQemu('qemu-nbd', (port) => ['-f', 'raw', '-x', 'ab'[i]!, '-b', '127.0.0.1', '-p', String(port), '-t', '-e', '4', files[i]!]);
      ceilings.qemuNbd = await ceilingRow(
        'ceiling: two qemu-nbd vs one',
        () => together([qemuNbd(0)], ['a']),
        () => together([qemuNbd(0), qemuNbd(1)], ['a', 'b']),
      );
    } else console.log('  ceiling: two qemu-nbd vs one: skipped (no qemu-nbd)');
    if (hasCommand('qemu-storage-daemon')) {
      const qsdBlockdev = (i: number) => ['--blockdev', `driver=file,node-name=f${i},filename=${files[i]}`, '--blockdev', `driver=raw,node-name=n${i},file=f${i}`];
      const qsd = (exports: string[], iothreads: string[], nodes: number[]) => () =>
        startQemu('qemu-storage-daemon', (port) => [
          ...iothreads.flatMap((id) => ['--object', `iothread,id=${id}`]),
          ...nodes.flatMap(qsdBlockdev),
          '--nbd-server',
          `addr.type=inet,addr.host=127.0.0.1,addr.port=${port}`,
          ...exports.flatMap((x) => ['--export', x]),
        ]);
      const label = 'ceiling: qsd two iothreads vs one export';
      try {
        ceilings.qsdIothreads = await ceilingRow(
          label,
          () => together([qsd(['type=nbd,id=e0,node-name=n0,name=a'], [], [0])], ['a']),
          () => together([qsd(['type=nbd,id=e0,node-name=n0,name=a,iothread=io0', 'type=nbd,id=e1,node-name=n1,name=b,iothread=io1'], ['io0', 'io1'], [0, 1])], ['a']).then((s) => ({ ...s, uris: [s.uris[0]!, s.uris[0]!.replace(/\/a$/, '/b')] })),
        );
      } catch (e) {
        // QEMU 7.2's daemon aborts when a client of an export in an iothread leaves (blockdev-nbd.c:62, nbd_blockdev_client_closed).
        console.log(`  ${label}: failed, no figure (${(e as Error).message})`);
        ceilings.qsdIothreads = { failed: (e as Error).message };
      }
    } else console.log('  ceiling: qsd two iothreads vs one export: skipped (no qemu-storage-daemon)');
    console.log(`  (load average ${os.loadavg()[0]!.toFixed(2)})`);
    return { ...result, ceilings };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await iothreadsBench();
