/**
 * Both cores (issue #27): `blocklayer serve` with two exports, each in its own iothread, vs one
 * export alone on the main thread; fio's nbd engine, 4 KiB random reads at QD32 on each export,
 * total IOPS. Paired rounds, alternating, median of the ratios (goal ≥ 1.7× on 2 CPUs). On a
 * loaded machine the wall-clock rates are noisy: the server's CPU time per request (user+system,
 * all threads, from /proc) is printed too.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fmtRate, row, sideBySide } from './util.js';

const ROOT = path.join(import.meta.dirname, '..');
const TSX = path.join(ROOT, 'node_modules/tsx/dist/loader.mjs');
const SECONDS = Number(process.env.IOTHREADS_BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.IOTHREADS_BENCH_ROUNDS ?? 3);
const TICKS = 100;

/** utime + stime of a process (all its threads), in seconds. */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

async function startServe(args: string[]): Promise<{ pid: number; port: number; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', TSX, path.join(ROOT, 'src/cli/main.ts'), 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /listening on [\d.]+:(\d+)/.exec(err);
      if (m) resolve(Number(m[1]));
    });
    void exited.then(() => reject(new Error(`serve exited: ${err}`)));
  });
  return {
    pid: child.pid!,
    port,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

function fioIops(uri: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const args = ['--name=r', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', '--iodepth=32', `--runtime=${SECONDS}`, '--time_based', '--output-format=json'];
    const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`fio exited ${code}`));
      resolve((JSON.parse(out.slice(out.search(/^\{/m))) as { jobs: { read: { iops: number } }[] }).jobs[0]!.read.iops);
    });
  });
}

export async function iothreadsBench(): Promise<unknown> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-iothreads-bench-'));
  const files = ['a.raw', 'b.raw'].map((f) => path.join(dir, f));
  for (const f of files) fs.writeFileSync(f, Buffer.alloc(64 * 1024 * 1024, 1));
  const server = ['--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=0'];
  const blockdev = (i: number) => ['--blockdev', `driver=file,node-name=f${i},filename=${files[i]}`, '--blockdev', `driver=raw,node-name=n${i},file=f${i}`];
  const cpu: { one: number[]; two: number[] } = { one: [], two: [] };
  try {
    const one = async () => {
      const s = await startServe([...blockdev(0), ...server, '--export', 'type=nbd,id=e0,node-name=n0,name=a']);
      const c0 = cpuSeconds(s.pid);
      const iops = await fioIops(`nbd://127.0.0.1:${s.port}/a`);
      cpu.one.push(((cpuSeconds(s.pid) - c0) / (iops * SECONDS)) * 1e6);
      await s.stop();
      return iops;
    };
    const two = async () => {
      const s = await startServe(['--object', 'iothread,id=io0', '--object', 'iothread,id=io1', ...blockdev(0), ...blockdev(1), ...server, '--export', 'type=nbd,id=e0,node-name=n0,name=a,iothread=io0', '--export', 'type=nbd,id=e1,node-name=n1,name=b,iothread=io1']);
      const c0 = cpuSeconds(s.pid);
      const [a, b] = await Promise.all([fioIops(`nbd://127.0.0.1:${s.port}/a`), fioIops(`nbd://127.0.0.1:${s.port}/b`)]);
      cpu.two.push(((cpuSeconds(s.pid) - c0) / ((a + b) * SECONDS)) * 1e6);
      await s.stop();
      return a + b;
    };
    console.log(`\niothreads: fio nbd 4 KiB randread QD32, ${SECONDS} s per side, ${ROUNDS} paired rounds`);
    const r = await sideBySide(ROUNDS, one, two);
    row('two exports in two iothreads vs one on main', `${fmtRate(r.subject)} IOPS`, `${fmtRate(r.baseline)} IOPS`, r.ratio, r.rounds);
    const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[xs.length >> 1]!;
    console.log(`  server CPU per request: ${med(cpu.two).toFixed(2)} µs (iothreads) vs ${med(cpu.one).toFixed(2)} µs (main thread alone)   goal ratio ≥ 1.7`);
    return { ...r, cpuUsPerRequest: { iothreads: med(cpu.two), main: med(cpu.one) } };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await iothreadsBench();
