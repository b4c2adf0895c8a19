/**
 * Start-up of the `blocklayer` command: `blocklayer info` of a small qcow2 image vs `node -e 0`
 * (a process that starts and does nothing), each run as a fresh process, alternately, the
 * median of the rounds' ratios printed. The goal: at most 1.5×. The command is the bundle
 * `npm run build` makes (scripts/build-cli.ts), built here from the current sources into a
 * temporary directory; its code cache (scripts/cli-launcher.ts) goes to another, written by a
 * first run (timed and printed too). Both sides run in bench/util.ts's commandEnv() (a user's
 * environment: without NODE_EXTRA_CA_CERTS, which this machine sets). Run: `npx tsx bench/cli-startup.ts [--rounds N]`.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildCli } from '../scripts/build-cli.js';
import { createImage } from '../src/index.js';
import { caCertsCost, commandEnv, row, sideBySide } from './util.js';

/** Wall-clock milliseconds of one process from spawn to exit; throws when it fails. */
function timed(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`node ${args.join(' ')}: exit ${code}: ${err.trim()}`))));
  });
}

export async function cliStartupBench(rounds = 15) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-cli-startup-'));
  try {
    // the bundle sits two levels under the package (as dist/cli/) so it finds package.json and node_modules
    const outdir = path.join(import.meta.dirname, '..', 'dist', `.cli-startup-${process.pid}`);
    // package.json's bin
    const [cli] = await buildCli(outdir);
    // the command's code cache in a directory of its own, made by the first run (scripts/cli-launcher.ts)
    const env = { ...commandEnv(), BLOCKLAYER_COMPILE_CACHE: path.join(dir, 'compile-cache') };
    const image = path.join(dir, 'small.qcow2');
    await createImage(image, { format: 'qcow2', size: 64 * 2 ** 20 });
    try {
      // warm the page cache; the first run also writes the code cache every later run reads
      const first = await timed([cli, 'info', image], env);
      const r = await sideBySide(
        rounds,
        () => timed(['-e', '0'], commandEnv()),
        () => timed([cli, 'info', image], env),
      );
      console.log(`cli start-up: blocklayer info of a 64 MiB qcow2 vs node -e 0, median of ${rounds} rounds (goal: ratio ≤ 1.5)`);
      row('blocklayer info (ms, lower is better)', r.subject.toFixed(1), r.baseline.toFixed(1), r.ratio, r.rounds);
      console.log(`  first run, without a code cache yet: ${first.toFixed(1)} ms`);
      const certs = caCertsCost();
      if (certs !== undefined) console.log(`  ${certs} (both sides run without it)`);
      return { infoMs: r.subject, nodeMs: r.baseline, ratio: r.ratio, firstMs: first, unit: 'ms (lower is better)' };
    } finally {
      fs.rmSync(outdir, { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--rounds');
  await cliStartupBench(i > 0 ? Number(process.argv[i + 1]) : undefined);
}
