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
 * wall clock moves with the neighbours' load and CPU time much less. Every output is compared with
 * qemu-img's byte for byte. `npx tsx bench/convert.ts [MiB] [rounds]` runs it alone.
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

/** Wall seconds and CPU seconds (user + system) of one run. */
interface Cost {
  wall: number;
  cpu: number;
}

/** Runs a command writing `out` (removed first); its CPU time comes from /usr/bin/time when present (else NaN). */
function runTimed(out: string, cmd: string, args: string[]): Cost {
  fs.rmSync(out, { force: true });
  const timed = fs.existsSync(TIME);
  const t0 = performance.now();
  const r = timed ? spawnSync(TIME, ['-f', '%U %S', cmd, ...args], { encoding: 'utf8' }) : spawnSync(cmd, args, { encoding: 'utf8' });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const last = timed ? r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number) : [Number.NaN, Number.NaN];
  return { wall, cpu: last[0] + last[1] };
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
  row(`${label} (wall)`, ms(median(o.map((c) => c.wall))), ms(median(q.map((c) => c.wall))), wall.ratio, wall.rounds);
  row(`${label} (cpu)`, ms(median(o.map((c) => c.cpu))), ms(median(q.map((c) => c.cpu))), cpuRatio, cpuRatios);
  const equal = same();
  if (!equal) console.log(`  ${label}: OUTPUTS DIFFER`);
  return { wall, cpu: { ratio: cpuRatio, rounds: cpuRatios, ours: o.map((c) => c.cpu), qemu: q.map((c) => c.cpu) }, same: equal };
}

export async function convertBench(mib = 256, rounds = 3): Promise<Record<string, unknown>> {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
  } catch {
    console.log('convert: skipped (qemu-img not installed)');
    return { skipped: true };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-convert-bench-'));
  const p = (f: string) => path.join(dir, f);
  const results: Record<string, unknown> = { mib };
  try {
    makeRaw(p('random.raw'), mib, false);
    makeRaw(p('half.raw'), mib, true);
    execFileSync('qemu-img', ['convert', '-O', 'qcow2', p('random.raw'), p('random.qcow2')]);
    const qemuRaw = (input: string, out: string) => () => runTimed(out, 'qemu-img', ['convert', '-t', 'writeback', '-O', 'raw', input, out]);
    const sameRaw = () => sameFile(p('q.raw'), p('o.raw'));
    console.log(`convert: ${mib} MiB images to raw, ours vs qemu-img convert -t writeback (speed ratios: > 1 is faster; wall and CPU time)`);

    results.qcow2InProcess = await compareRow('qcow2 random -> raw, convertImage', rounds, qemuRaw(p('random.qcow2'), p('q.raw')), async () => {
      fs.rmSync(p('o.raw'), { force: true });
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await convertImage(p('random.qcow2'), p('o.raw'));
      const c = process.cpuUsage(c0);
      return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
    }, sameRaw);

    if (!fs.existsSync(CLI)) {
      console.log(`  the CLI rows: skipped (${path.relative(process.cwd(), CLI)} not built: npm run build)`);
      return results;
    }
    const ourRaw = (input: string, out: string, extra: string[] = []) => () => runTimed(out, process.execPath, [CLI, 'convert', ...extra, '-O', 'raw', input, out]);
    results.qcow2Cli = await compareRow('qcow2 random -> raw, CLI', rounds, qemuRaw(p('random.qcow2'), p('q.raw')), ourRaw(p('random.qcow2'), p('o.raw')), sameRaw);
    const qemuDirect = () => runTimed(p('q.raw'), 'qemu-img', ['convert', '-t', 'none', '-O', 'raw', p('random.qcow2'), p('q.raw')]);
    results.qcow2CliVsDirect = await compareRow('qcow2 random -> raw, CLI -t none, both', rounds, qemuDirect, ourRaw(p('random.qcow2'), p('o.raw'), ['-t', 'none']), sameRaw);
    for (const fmt of ['vpc', 'vhdx', 'vdi', 'vmdk']) {
      const image = p(`half.${fmt}`);
      execFileSync('qemu-img', ['convert', '-O', fmt, p('half.raw'), image]);
      results[`${fmt}Cli`] = await compareRow(`${fmt} half data -> raw, CLI`, rounds, qemuRaw(image, p('q.raw')), ourRaw(image, p('o.raw')), sameRaw);
    }
    // The vdi outputs are compared as guest data (qemu-img's raw of each).
    const [q, o] = [p('q.vdi'), p('o.vdi')];
    results.rawToVdiCli = await compareRow(
      'raw half data -> vdi, CLI',
      rounds,
      () => runTimed(q, 'qemu-img', ['convert', '-t', 'writeback', '-f', 'raw', '-O', 'vdi', p('half.raw'), q]),
      () => runTimed(o, process.execPath, [CLI, 'convert', '-f', 'raw', '-O', 'vdi', p('half.raw'), o]),
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

if (import.meta.url === `file://${process.argv[1]}`) await convertBench(Number(process.argv[2] ?? 256), Number(process.argv[3] ?? 3));
