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
 * A round is one timed run of each side, the order alternating (util.sideBySide). Every timed
 * run, ours or qemu-img's, starts from the same state, so that no run pays for the one before it:
 * 1. every output of the bench is removed, whichever side wrote it (both sides write the same
 *    output path, so there is one): its page-cache pages and its blocks go with it. Earlier
 *    versions removed only the running side's own previous output, so one side ran beside the
 *    other's 1 GiB output (its pages in the page cache, its blocks on the disk) and the other
 *    did not: the ratio of one row went from 0.49 to 1.29 between runs of the same code;
 * 2. `sync`: the removal (and the ext4 discard of the freed blocks, this disk is mounted with
 *    `discard`) and any dirty page-cache data of the machine are written back now, not inside
 *    the timed run as the flusher's or the file system's work competing with it;
 * 3. the input's files are read once (they stay in the page cache for both sides: the rows
 *    measure the conversion, not the disk's reads);
 * then the run is timed, flush (fsync of the output) included. After it, untimed, its output is
 * compared byte for byte with qemu-img's, made once before the row's rounds by the same command
 * (a vdi output as guest data: qemu-img's raw of it); the next run's step 1 removes it.
 * Every command runs in bench/util.ts's commandEnv(): without NODE_EXTRA_CA_CERTS, which this
 * machine sets and which would add Node's parsing of a certificate bundle to our start-up only
 * (the line after the title says how much).
 * Each row gives the median of the rounds' paired ratios and their range. Run it with 5 or more
 * rounds for a ratio to judge by (3 are still taken when unsaid). No global page-cache drop:
 * other processes of the machine keep theirs.
 *
 * `npx tsx bench/convert.ts [MiB] [rounds] [rows]` runs it alone; `rows`, when given, is a
 * regular expression: only the rows whose label matches run (`qcow2 random` for the two qcow2 rows).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convertImage } from '../src/index.js';
import { caCertsCost, commandEnv, median, row, sideBySide } from './util.js';

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

/** Every output the bench writes, removed before each timed run (see the header); set by convertBench. */
let outputs: readonly string[] = [];

/** What every timed run begins with (see the header): all outputs removed, `sync`, the inputs read. */
function prepare(inputs: readonly string[]): void {
  for (const out of outputs) fs.rmSync(out, { force: true });
  execFileSync('sync');
  warm(inputs);
}

/** Runs a command reading `inputs` (see prepare); its CPU time comes from /usr/bin/time when present (else NaN). */
function runTimed(inputs: readonly string[], cmd: string, args: string[]): Cost {
  prepare(inputs);
  const timed = fs.existsSync(TIME);
  const t0 = performance.now();
  // both sides run in commandEnv() (qemu-img does not read what it leaves out)
  const env = commandEnv();
  const r = timed ? spawnSync(TIME, ['-f', '%U %S', cmd, ...args], { encoding: 'utf8', env }) : spawnSync(cmd, args, { encoding: 'utf8', env });
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

/**
 * One row: `ours` against qemu-img, rounds alternating; ratios of speed (baseline time / our time),
 * wall and CPU. `same` compares the output of the run just made with qemu-img's (untimed, before
 * the next run removes it).
 */
async function compareRow(label: string, rounds: number, qemu: () => Cost, ours: () => Promise<Cost> | Cost, same: () => boolean): Promise<Record<string, unknown>> {
  const q: Cost[] = [];
  const o: Cost[] = [];
  const differ = { qemu: 0, ours: 0 };
  const loadBefore = os.loadavg()[0];
  const wall = await sideBySide(
    rounds,
    async () => {
      const c = qemu();
      q.push(c);
      if (!same()) differ.qemu++;
      return 1 / c.wall;
    },
    async () => {
      const c = await ours();
      o.push(c);
      if (!same()) differ.ours++;
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
  const equal = differ.qemu === 0 && differ.ours === 0;
  if (!equal) console.log(`  ${label}: OUTPUTS DIFFER (ours in ${differ.ours} of ${rounds} rounds, qemu-img's in ${differ.qemu})`);
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
  // Both sides of a row write `out` (a raw output) or `outVdi`; `guest` is a vdi output's raw, made to compare it.
  const [out, outVdi, guest, ref] = [p('out.raw'), p('out.vdi'), p('guest.raw'), p('ref.raw')];
  outputs = [out, outVdi, guest];
  /** qemu-img's raw of `image` in `ref`, made (untimed) when the image differs from the last one's. */
  let refOf: string | undefined;
  const reference = (image: string) => {
    if (refOf === image) return;
    execFileSync('qemu-img', ['convert', '-O', 'raw', image, ref]);
    refOf = image;
  };
  try {
    makeRaw(p('random.raw'), mib, false);
    makeRaw(p('half.raw'), mib, true);
    execFileSync('qemu-img', ['convert', '-O', 'qcow2', p('random.raw'), p('random.qcow2')]);
    const qemuRaw = (input: string) => () => runTimed([input], 'qemu-img', ['convert', '-t', 'writeback', '-O', 'raw', input, out]);
    const sameRaw = () => sameFile(out, ref);
    console.log(`convert: ${mib} MiB images to raw, ours vs qemu-img convert -t writeback (speed ratios: > 1 is faster; wall and CPU time), ${rounds} rounds`);
    const certs = caCertsCost();
    if (certs !== undefined) console.log(`  ${certs}`);

    const inProcess = 'qcow2 random -> raw, convertImage';
    if (wanted(inProcess)) {
      reference(p('random.qcow2'));
      results.qcow2InProcess = await compareRow(inProcess, rounds, qemuRaw(p('random.qcow2')), async () => {
        prepare([p('random.qcow2')]);
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await convertImage(p('random.qcow2'), out);
        const c = process.cpuUsage(c0);
        return { wall: (performance.now() - t0) / 1000, user: c.user / 1e6, sys: c.system / 1e6, cpu: (c.user + c.system) / 1e6 };
      }, sameRaw);
    }

    if (!fs.existsSync(CLI)) {
      console.log(`  the CLI rows: skipped (${path.relative(process.cwd(), CLI)} not built: npm run build)`);
      return results;
    }
    const ourRaw = (input: string, extra: string[] = []) => () => runTimed([input], process.execPath, [CLI, 'convert', ...extra, '-O', 'raw', input, out]);
    const cliRow = async (key: string, label: string, image: string | undefined, qemu: () => Cost, ours: () => Cost, same = sameRaw) => {
      if (!wanted(label)) return;
      if (image !== undefined) reference(image);
      results[key] = await compareRow(label, rounds, qemu, ours, same);
    };
    await cliRow('qcow2Cli', 'qcow2 random -> raw, CLI', p('random.qcow2'), qemuRaw(p('random.qcow2')), ourRaw(p('random.qcow2')));
    const qemuDirect = () => runTimed([p('random.qcow2')], 'qemu-img', ['convert', '-t', 'none', '-O', 'raw', p('random.qcow2'), out]);
    await cliRow('qcow2CliVsDirect', 'qcow2 random -> raw, CLI -t none, both', p('random.qcow2'), qemuDirect, ourRaw(p('random.qcow2'), ['-t', 'none']));
    for (const fmt of ['vpc', 'vhdx', 'vdi', 'vmdk']) {
      const label = `${fmt} half data -> raw, CLI`;
      if (!wanted(label)) continue;
      const image = p(`half.${fmt}`);
      execFileSync('qemu-img', ['convert', '-O', fmt, p('half.raw'), image]);
      await cliRow(`${fmt}Cli`, label, image, qemuRaw(image), ourRaw(image));
    }
    // The vdi outputs are compared as guest data: qemu-img's raw of each against that of qemu-img's vdi made once.
    const rawToVdi = 'raw half data -> vdi, CLI';
    if (wanted(rawToVdi)) {
      const refVdi = p('ref.vdi');
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vdi', p('half.raw'), refVdi]);
      reference(refVdi);
      fs.rmSync(refVdi);
      await cliRow(
        'rawToVdiCli',
        rawToVdi,
        undefined,
        () => runTimed([p('half.raw')], 'qemu-img', ['convert', '-t', 'writeback', '-f', 'raw', '-O', 'vdi', p('half.raw'), outVdi]),
        () => runTimed([p('half.raw')], process.execPath, [CLI, 'convert', '-f', 'raw', '-O', 'vdi', p('half.raw'), outVdi]),
        () => {
          execFileSync('qemu-img', ['convert', '-O', 'raw', outVdi, guest]);
          return sameFile(guest, ref);
        },
      );
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) await convertBench(Number(process.argv[2] ?? 256), Number(process.argv[3] ?? 3), process.argv[4]);
