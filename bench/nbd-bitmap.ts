/**
 * Block status of a dirty bitmap over NBD (#23): `nbdinfo --map=qemu:dirty-bitmap:b0` against
 * `blocklayer serve -r -B b0` and `qemu-nbd -r -B b0` serving the same 64 GiB qcow2 image, whose
 * persistent bitmap QEMU dirtied with 10,000 4 KiB writes at random 64 KiB granules. Each side
 * runs as its own process over a unix socket; nbdinfo runs alternately against each, whole
 * processes timed; the maps must be byte-identical. Goal: ratio (qemu-nbd time / ours) ≥ 1.0.
 * Load-independent too: each server's CPU time per map (utime + stime from /proc, Linux), whole
 * connections included (handshake, meta context, the block status replies), and the main thread's
 * share of it (without V8's compiler threads).
 *
 *   npx tsx bench/nbd-bitmap.ts [--rounds N]
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildCli } from '../scripts/build-cli.js';
import { row, sideBySide } from './util.js';

const GRANULE = 65536;
const SIZE = 64 * 2 ** 30;

/** A 64 GiB qcow2 with a persistent bitmap b0 that qemu-io dirtied at 10,000 random granules (a fixed seed). */
export function makeImage(file: string): void {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(SIZE)]);
  execFileSync('qemu-img', ['bitmap', '--add', file, 'b0']);
  let x = 7;
  const next = () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x;
  };
  const cmds = Array.from({ length: 10_000 }, () => `write -P 9 ${(next() % (SIZE / GRANULE)) * GRANULE} 4096`).join('\n');
  execFileSync('qemu-io', ['-f', 'qcow2', file], { input: `${cmds}\n`, stdio: ['pipe', 'ignore', 'inherit'] });
}

/** Waits until a unix socket exists (the server is listening). */
export async function listening(socket: string, server: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (fs.existsSync(socket)) return;
    if (server.exitCode !== null) throw new Error(`server exited with ${server.exitCode}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no socket at ${socket}`);
}

/** CPU ms a process has used so far (utime + stime of /proc/PID/stat), or NaN off Linux. */
export function cpuMs(pid: number | undefined): number {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return Number.NaN;
  }
}

/**
 * CPU ms the main thread of a process has used so far (/proc/PID/schedstat, in nanoseconds: no
 * 10 ms clock ticks), or NaN off Linux. The main thread is where a map's requests wait; the rest
 * of a server's CPU is its helper threads (V8's compiler and GC, libuv's pool).
 */
export function mainCpuMs(pid: number | undefined): number {
  try {
    return Number(fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return Number.NaN;
  }
}

/** Wall-clock ms of one nbdinfo --map over `socket`; its output in `out`. */
export function mapOnce(socket: string, out: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn('nbdinfo', ['--map=qemu:dirty-bitmap:b0', `nbd+unix:///?socket=${socket}`], { stdio: ['ignore', fs.openSync(out, 'w'), 'inherit'] });
    p.once('error', reject);
    p.once('exit', (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`nbdinfo exit ${code}`))));
  });
}

export async function nbdBitmapBench(rounds = 21) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-nbd-bitmap-'));
  const outdir = path.join(import.meta.dirname, '..', 'dist', `.nbd-bitmap-${process.pid}`);
  const servers: ChildProcess[] = [];
  try {
    const image = path.join(dir, 'big.qcow2');
    makeImage(image);
    await buildCli(outdir);
    const qSock = path.join(dir, 'q.sock');
    const oSock = path.join(dir, 'o.sock');
    servers.push(spawn('qemu-nbd', ['-t', '-r', '-f', 'qcow2', '-B', 'b0', '-k', qSock, image], { stdio: 'ignore' }));
    await listening(qSock, servers[0]!);
    servers.push(spawn(process.execPath, [path.join(outdir, 'blocklayer.js'), 'serve', '-r', '-f', 'qcow2', '-B', 'b0', '-k', oSock, image], { stdio: 'ignore' }));
    await listening(oSock, servers[1]!);
    const qOut = path.join(dir, 'q.map');
    const oOut = path.join(dir, 'o.map');
    // Times are inverted into rates so that the ratio reads as everywhere else: above 1, ours is faster.
    const [qemu, ours] = servers as [ChildProcess, ChildProcess];
    await mapOnce(qSock, qOut);
    await mapOnce(oSock, oOut);
    const cpu0 = [cpuMs(qemu.pid), cpuMs(ours.pid)];
    const main0 = [mainCpuMs(qemu.pid), mainCpuMs(ours.pid)];
    const r = await sideBySide(
      rounds,
      async () => 1000 / (await mapOnce(qSock, qOut)),
      async () => 1000 / (await mapOnce(oSock, oOut)),
    );
    // Clock ticks are 10 ms: per map only as a mean over every round.
    const qCpu = (cpuMs(qemu.pid) - cpu0[0]!) / rounds;
    const oCpu = (cpuMs(ours.pid) - cpu0[1]!) / rounds;
    const qMain = (mainCpuMs(qemu.pid) - main0[0]!) / rounds;
    const oMain = (mainCpuMs(ours.pid) - main0[1]!) / rounds;
    const same = fs.readFileSync(qOut).equals(fs.readFileSync(oOut));
    const lines = fs.readFileSync(oOut, 'utf8').split('\n').length - 1;
    console.log(`nbd bitmap map: nbdinfo --map=qemu:dirty-bitmap:b0 of a 64 GiB qcow2 (${lines} extents, maps ${same ? 'identical' : 'DIFFERENT'}), whole process, median of ${rounds}`);
    row('maps per second: ours vs qemu-nbd', r.subject.toFixed(1), r.baseline.toFixed(1), r.ratio, r.rounds);
    row('server CPU ms per map (mean): ours vs qemu-nbd', oCpu.toFixed(2), qCpu.toFixed(2), qCpu / oCpu);
    row('  of it the main thread: ours vs qemu-nbd', oMain.toFixed(2), qMain.toFixed(2), qMain / oMain);
    console.log(`  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    if (!same) throw new Error('the maps differ');
    return {
      subject: r.subject,
      baseline: r.baseline,
      ratio: r.ratio,
      rounds: r.rounds,
      unit: 'nbdinfo --map runs per second (higher is better)',
      serverCpuMs: { subject: oCpu, baseline: qCpu, ratio: qCpu / oCpu, unit: 'server CPU ms per map (ratio above 1: ours uses less)' },
      mainThreadCpuMs: { subject: oMain, baseline: qMain, ratio: qMain / oMain, unit: "server main thread's CPU ms per map (ratio above 1: ours uses less)" },
    };
  } finally {
    for (const s of servers) s.kill('SIGTERM');
    fs.rmSync(outdir, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--rounds');
  await nbdBitmapBench(i > 0 ? Number(process.argv[i + 1]) : undefined);
}
