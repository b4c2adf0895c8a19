/**
 * convert → raw speed, side by side with `qemu-img convert -t writeback -O raw` on the same images
 * in the same run (alternating rounds, median of paired ratios), both flushing the output:
 * - in process: `convertImage` on a qcow2 of random data (no process start-up on our side);
 * - whole processes: the built CLI (`dist/cli/blocklayer.cjs`, package.json's bin, after `npm run build`) on that qcow2
 *   and on vpc, vhdx, vdi and vmdk images of half data made by `qemu-img convert -O FMT`;
 * - `convert -O vdi` from raw, both whole processes;
 * - `convert -t none` (a raw output written past the page cache, O_DIRECT) against
 *   `qemu-img convert -t none`, which does the same.
 * Each row prints wall time and CPU time (user + system of the converting process: the in-process
 * row's own process.cpuUsage(), a child's through /usr/bin/time), because on a shared machine the
 * wall clock moves with the neighbours' load and CPU time much less; a third line gives the
 * medians of user and system time apart (user time is the program's own work, system time mostly
 * the kernel's page-cache copy and the flush, the part that moves with the machine) and the
 * load average (1 minute) when the row began and ended.
 *
 * Every timed run, ours or qemu-img's, starts from the same state, so that no run pays for the
 * one before it (the noise of earlier versions: one qemu-img command took 400 to 1320 ms of CPU):
 * 1. its own previous output is removed (its page-cache pages go with it);
 * 2. `sync`: the removal (and the ext4 discard of the freed blocks, this disk is mounted with
 *    `discard`) and any dirty page-cache data of the machine are written back now, not inside
 *    the timed run as the flusher's or the file system's work competing with it;
 * 3. the input's files are read once (they stay in the page cache for both sides: the rows
 *    measure the conversion, not the disk's reads);
 * then the run is timed, flush (fsync of the output) included. Rounds alternate which side goes
 * first (util.sideBySide); each row gives the median of the rounds' paired ratios and their range.
 * Run it with 5 or more rounds for a ratio to judge by (3 are still taken when unsaid). No
 * global page-cache drop: other processes of the machine keep theirs.
 *
 * Every output is compared with qemu-img's byte for byte.
 * `npx tsx bench/convert.ts [MiB] [rounds] [rows]` runs it alone; `rows`, when given, is a
 * regular expression: only the rows whose label matches run (`qcow2 random` for the two qcow2 rows).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convertImage } from '../src/index.js';
import { median, row, sideBySide } from './util.js';

// package.json's bin, what `blocklayer` runs once installed (the ES module launcher beside it starts an ES module loader first)
const CLI = path.join(import.meta.dirname, '..', 'dist', 'cli', 'blocklayer.cjs');
const TIME = '/usr/bin/time';

/** Wall seconds and CPU seconds (user + system, and each) of one run. */
interface Cost {
  wall: number;
  cpu: number;
  /** The two parts of cpu. */
  user: number;
  sys: number;
}

/** Reads `files` once, so that both sides of a round find them in the page cache. */
function warm(files: readonly string[]): void {
  const buf = Buffer.allocUnsafe(4 << 20);
  for (const f of files) {
    const fd = fs.openSync(f, 'r');
    try {
      while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** What every timed run begins with (see the header): its old output removed, `sync`, the inputs read. */
function prepare(out: string, inputs: readonly string[]): void {
  fs.rmSync(out, { force: true });
  execFileSync('sync');
  warm(inputs);
}

/** Runs a command reading `inputs` and writing `out` (see prepare); its CPU time comes from /usr/bin/time when present (else NaN). */
function runTimed(inputs: readonly string[], out: string, cmd: string, args: string[]): Cost {
  prepare(out, inputs);
  const timed = fs.existsSync(TIME);
  const t0 = performance.now();
  const r = timed ? spawnSync(TIME, ['-f', '%U %S', cmd, ...args], { encoding: 'utf8' }) : spawnSync(cmd, args, { encoding: 'utf8' });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const last = timed ? r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number) : [Number.NaN, Number.NaN];
  return { wall, user: last[0], sys: last[1], cpu: last[0] + last[1] };
}

/** Byte-for-byte equality of two files, read in 4 MiB pieces. */
function sameFile(a: string, b: string): boolean {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  try {
    if (fs.fstatSync(fa).size !== fs.fstatSync(fb).size) return false;
    const x = Buffer.allocUnsafe(4 << 20);
    const y = Buffer.allocUnsafe(4 << 20);
    for (let pos = 0; ; pos += x.length) {
      const n = fs.readSync(fa, x, 0, x.length, pos);
      if (n === 0) return true;
      if (fs.readSync(fb, y, 0, n, pos) !== n || !x.subarray(0, n).equals(y.subarray(0, n))) return false;
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** Writes `mib` MiB: random data everywhere, or (half) random data in every other MiB with holes between. */
function makeRaw(file: string, mib: number, half: boolean): void {
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, mib << 20);
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let m = 0; m < mib; m += half ? 2 : 1) fs.writeSync(fd, crypto.randomFillSync(buf), 0, buf.length, m << 20);
  fs.closeSync(fd);
}

/** One row: `ours` against qemu-img, rounds alternating; ratios of speed (baseline time / our time), wall and CPU. */
async function compareRow(label: string, rounds: number, qemu: () => Cost, ours: () => Promise<Cost> | Cost, same: () => boolean): Promise<Record<string, unknown>> {
  const q: Cost[] = [];
  const o: Cost[] = [];
  const loadBefore = os.loadavg()[0];
  const wall = await sideBySide(
    rounds,
    async () => {
      const c = qemu();
      q.push(c);
      return 1 / c.wall;
    },
    async () => {
      const c = await ours();
      o.push(c);
      return 1 / c.wall;
    },
  );
  const cpuRatios = o.map((c, i) => q[i].cpu / c.cpu).sort((a, b) => a - b);
  const cpuRatio = median(cpuRatios);
  const ms = (s: number) => `${(s * 1000).toFixed(0)} ms`;
  const part = (cs: Cost[], k: 'user' | 'sys') => ms(median(cs.map((c) => c[k])));
  row(`${label} (wall)`, ms(median(o.map((c) => c.wall))), ms(median(q.map((c) => c.wall))), wall.ratio, wall.rounds);
  row(`${label} (cpu)`, ms(median(o.map((c) => c.cpu))), ms(median(q.map((c) => c.cpu))), cpuRatio, cpuRatios);
  const load = [loadBefore, os.loadavg()[0]];
  console.log(`  ${''.padEnd(46)} user ${part(o, 'user')} vs ${part(q, 'user')}, system ${part(o, 'sys')} vs ${part(q, 'sys')}; load average ${load.map((l) => l.toFixed(1)).join(' → ')}`);
  const equal = same();
  if (!equal) console.log(`  ${label}: OUTPUTS DIFFER`);
  const costs = (cs: Cost[]) => cs.map(({ wall, user, sys }) => ({ wall, user, sys }));
  return { wall, cpu: { ratio: cpuRatio, rounds: cpuRatios }, ours: costs(o), qemu: costs(q), load, same: equal };
}

export async function convertBench(mib = 256, rounds = 3, rows?: string): Promise<Record<string, unknown>> {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
  } catch {
    console.log('convert: skipped (qemu-img not installed)');
    return { skipped: true };
  }
  const wanted = rows === undefined ? () => true : (label: string) => new RegExp(rows).test(label);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-convert-bench-'));
  const p = (f: string) => path.join(dir, f);
  const results: Record<string, unknown> = { mib, rounds };
  try {
    makeRaw(p('random.raw'), mib, false);
    makeRaw(p('half.raw'), mib, true);
    execFileSync('qemu-img', ['convert', '-O', 'qcow2', p('random.raw'), p('random.qcow2')]);
    const qemuRaw = (input: string, out: string) => () => runTimed([input], out, 'qemu-img', ['convert', '-t', 'writeback', '-O', 'raw', input, out]);
    const sameRaw = () => sameFile(p('q.raw'), p('o.raw'));
    console.log(`convert: ${mib} MiB images to raw, ours vs qemu-img convert -t writeback (speed ratios: > 1 is faster; wall and CPU time), ${rounds} rounds`);

    const inProcess = 'qcow2 random -> raw, convertImage';
    if (wanted(inProcess)) {
      results.qcow2InProcess = await compareRow(inProcess, rounds, qemuRaw(p('random.qcow2'), p('q.raw')), async () => {
        prepare(p('o.raw'), [p('random.qcow2')]);
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await convertImage(p('random.qcow2'), p('o.raw'));
        const c = process.cpuUsage(c0);
        return { wall: (performance.now() - t0) / 1000, user: c.user / 1e6, sys: c.system / 1e6, cpu: (c.user + c.system) / 1e6 };
      }, sameRaw);
    }

    if (!fs.existsSync(CLI)) {
      console.log(`  the CLI rows: skipped (${path.relative(process.cwd(), CLI)} not built: npm run build)`);
      return results;
    }
    const ourRaw = (input: string, out: string, extra: string[] = []) => () => runTimed([input], out, process.execPath, [CLI, 'convert', ...extra, '-O', 'raw', input, out]);
    const cliRow = async (key: string, label: string, qemu: () => Cost, ours: () => Cost, same = sameRaw) => {
      if (wanted(label)) results[key] = await compareRow(label, rounds, qemu, ours, same);
    };
    await cliRow('qcow2Cli', 'qcow2 random -> raw, CLI', qemuRaw(p('random.qcow2'), p('q.raw')), ourRaw(p('random.qcow2'), p('o.raw')));
    const qemuDirect = () => runTimed([p('random.qcow2')], p('q.raw'), 'qemu-img', ['convert', '-t', 'none', '-O', 'raw', p('random.qcow2'), p('q.raw')]);
    await cliRow('qcow2CliVsDirect', 'qcow2 random -> raw, CLI -t none, both', qemuDirect, ourRaw(p('random.qcow2'), p('o.raw'), ['-t', 'none']));
    for (const fmt of ['vpc', 'vhdx', 'vdi', 'vmdk']) {
      const label = `${fmt} half data -> raw, CLI`;
      if (!wanted(label)) continue;
      const image = p(`half.${fmt}`);
      execFileSync('qemu-img', ['convert', '-O', fmt, p('half.raw'), image]);
      await cliRow(`${fmt}Cli`, label, qemuRaw(image, p('q.raw')), ourRaw(image, p('o.raw')));
    }
    // The vdi outputs are compared as guest data (qemu-img's raw of each).
    const [q, o] = [p('q.vdi'), p('o.vdi')];
    await cliRow(
      'rawToVdiCli',
      'raw half data -> vdi, CLI',
      () => runTimed([p('half.raw')], q, 'qemu-img', ['convert', '-t', 'writeback', '-f', 'raw', '-O', 'vdi', p('half.raw'), q]),
      () => runTimed([p('half.raw')], o, process.execPath, [CLI, 'convert', '-f', 'raw', '-O', 'vdi', p('half.raw'), o]),
      () => {
        execFileSync('qemu-img', ['convert', '-O', 'raw', q, p('q.raw')]);
        execFileSync('qemu-img', ['convert', '-O', 'raw', o, p('o.raw')]);
        return sameRaw();
      },
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) await convertBench(Number(process.argv[2] ?? 256), Number(process.argv[3] ?? 3), process.argv[4]);
