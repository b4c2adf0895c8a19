/**
 * Memory of idle drives at scale (issue #27): N null drives, each with an iops limit of its own
 * (so each has a throttle group, queue and buckets), opened in a fresh process and left idle;
 * the heap per drive and the process's RSS. Side by side: the same number of drives without a
 * limit, so the limit's own cost shows as a ratio. Goal: 100,000 idle throttled drives in one
 * process within 512 MiB of RSS. The library is bundled first (esbuild, as the package is built,
 * without tsx's per-function name wrappers that would add a property array to every closure).
 * Run: `npx tsx bench/idle-drives.ts [--drives N]`.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { build } from 'esbuild';
import { row } from './util.js';

const GOAL_DRIVES = 100_000;
const GOAL_RSS_MIB = 512;

const CHILD = `
const { BlockLayer } = await import(process.argv[2]);
const n = Number(process.argv[3]);
const throttled = process.argv[4] === 'throttled';
const used = () => { const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };
globalThis.gc(); const h0 = used();
const layer = new BlockLayer();
const t0 = performance.now();
for (let i = 0; i < n; i++) await layer.openDrive(throttled ? { driver: 'null', size: '1M', throttle: { iopsTotal: 1000 } } : { driver: 'null', size: '1M' });
const openUs = ((performance.now() - t0) * 1000) / n;
globalThis.gc();
const out = { heapPerDrive: (used() - h0) / n, rssMiB: process.memoryUsage().rss / 2 ** 20, openUs };
await layer.close();
console.log(JSON.stringify(out));
`;

interface Figures {
  heapPerDrive: number;
  rssMiB: number;
  openUs: number;
}

function runChild(dir: string, lib: string, drives: number, mode: 'throttled' | 'plain'): Promise<Figures> {
  const script = path.join(dir, 'child.mjs');
  fs.writeFileSync(script, CHILD);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', script, lib, String(drives), mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Figures) : reject(new Error(`idle-drives child: exit ${code}: ${err.trim()}`))));
  });
}

export async function idleDrivesBench(drives = GOAL_DRIVES) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-idle-drives-'));
  try {
    // bundled beside the sources' node_modules, so the external packages resolve
    const lib = path.join(import.meta.dirname, '..', 'dist', `.idle-drives-${process.pid}.mjs`);
    await build({ entryPoints: [path.join(import.meta.dirname, '../src/index.ts')], bundle: true, format: 'esm', platform: 'node', target: 'node20', outfile: lib, external: ['koffi', 'fs-ext', 'zstd-napi', 'file-disk'], logLevel: 'warning' });
    try {
      const plain = await runChild(dir, lib, drives, 'plain');
      const limited = await runChild(dir, lib, drives, 'throttled');
      console.log(`\nIdle drives: ${drives.toLocaleString('en')} null drives opened and left idle in a fresh process (heap after gc); baseline: the same drives without a limit`);
      row('heap bytes per drive', limited.heapPerDrive.toFixed(0), plain.heapPerDrive.toFixed(0), limited.heapPerDrive / plain.heapPerDrive);
      row('process RSS (MiB)', limited.rssMiB.toFixed(0), plain.rssMiB.toFixed(0), limited.rssMiB / plain.rssMiB);
      row('µs per open', limited.openUs.toFixed(0), plain.openUs.toFixed(0), limited.openUs / plain.openUs);
      const rssAtGoal = drives === GOAL_DRIVES ? limited.rssMiB : undefined;
      console.log(
        rssAtGoal === undefined
          ? `  goal: ${GOAL_DRIVES.toLocaleString('en')} throttled drives within ${GOAL_RSS_MIB} MiB RSS (run with --drives ${GOAL_DRIVES} to check it)`
          : `  goal: ${GOAL_DRIVES.toLocaleString('en')} throttled drives within ${GOAL_RSS_MIB} MiB RSS: ${rssAtGoal.toFixed(0)} MiB (${rssAtGoal <= GOAL_RSS_MIB ? 'met' : 'not met'})`,
      );
      return { drives, throttled: limited, plain };
    } finally {
      fs.rmSync(lib, { force: true });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const at = process.argv.indexOf('--drives');
  await idleDrivesBench(at >= 0 ? Number(process.argv[at + 1]) : GOAL_DRIVES);
}
