/**
 * Drive calls through the worker RPC (blocklayer/worker, #26): 64 KiB reads at QD16 of a drive in
 * a dedicated worker (a memory drive, and in Chromium a 64 MiB file in OPFS through sync access handles), each of the 16 lanes into its own buffer, issued from the page through connectWorkerLayer, against the same
 * reads issued inside that worker on the same layer (the baseline), alternating rounds, in
 * headless Chromium (tests/fixtures/browser/worker-page.html) and in Node's worker_threads.
 * Ratio = the page's throughput / the worker's own. Goal (Chromium): ≥ 0.7.
 *
 *   npx tsx bench/worker-rpc.ts [--rounds N]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { serveStatic } from '../examples/browser/static-server.js';
import { buildBrowser } from '../scripts/build-browser.js';
import { BlockLayer } from '../src/index.js';
import { connectWorkerLayer } from '../src/worker/index.js';
import { row, sideBySide } from './util.js';

const SIZE = 64 * 1024;
const READS = 4000;
const DEPTH = 16;
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOT = path.resolve(import.meta.dirname, '..');

/** READS reads at QD DEPTH, each lane into its own buffer (as an emulator's disk does). */
async function timedReads(read: (offset: number, into: Uint8Array) => Promise<unknown>, length: number): Promise<number> {
  const span = Math.floor(length / SIZE);
  let next = 0;
  const start = performance.now();
  const lane = async () => {
    const into = new Uint8Array(SIZE);
    while (next < READS) {
      const i = next++;
      await read(((i * 7919) % span) * SIZE, into);
    }
  };
  await Promise.all(Array.from({ length: DEPTH }, lane));
  return performance.now() - start;
}

async function chromiumRow(rounds: number): Promise<Record<string, { ratio: number; min: number; max: number }> | null> {
  if (!fs.existsSync(CHROMIUM)) {
    console.log('  Chromium: skipped (no /usr/bin/chromium)');
    return null;
  }
  const { chromium } = await import('playwright-core');
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-worker-bench-'));
  await buildBrowser(out);
  const server = await serveStatic({ '/dist/': out, '/page/': path.join(ROOT, 'tests/fixtures/browser') });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
  try {
    const page = await browser.newPage();
    await page.goto(`${server.url}/page/worker-page.html`);
    await page.waitForFunction(() => (globalThis as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 20_000 });
    const results: Record<string, { ratio: number; min: number; max: number }> = {};
    for (const storage of ['memory', 'opfs'] as const) {
      const r = await page.evaluate(
        (a) => (globalThis as unknown as { readBench: (a: object) => Promise<{ ratio: number; min: number; max: number; pageMs: number; workerMs: number }> }).readBench(a),
        { size: SIZE, reads: READS, depth: DEPTH, rounds, storage },
      );
      const mibs = (ms: number) => `${((READS * SIZE) / 2 ** 20 / (ms / 1000)).toFixed(0)} MiB/s`;
      console.log(`  ${`Chromium ${storage}: page → worker vs in the worker`.padEnd(46)} ${mibs(r.pageMs).padStart(12)}  vs ${mibs(r.workerMs).padStart(12)}  ratio ${r.ratio.toFixed(3)}  (rounds ${r.min.toFixed(2)}–${r.max.toFixed(2)})`);
      results[storage] = r;
    }
    return results;
  } finally {
    await browser.close();
    await server.close();
    fs.rmSync(out, { recursive: true, force: true });
  }
}

async function nodeRow(rounds: number): Promise<number> {
  const worker = new Worker(new URL('../tests/helpers/tsx-worker.mjs', import.meta.url), {
    workerData: { entry: new URL('../tests/helpers/worker-layer-child.ts', import.meta.url).href },
  });
  const remote = connectWorkerLayer(worker);
  const local = new BlockLayer();
  try {
    const options = { driver: 'memory', size: 64 * 2 ** 20 } as const;
    const there = await remote.openDrive(options);
    const here = await local.openDrive(options);
    await timedReads((o, b) => there.read(o, b), there.length);
    await timedReads((o, b) => here.read(o, b), here.length);
    // Rates, so the ratio is the remote's throughput over the same calls in one thread.
    const r = await sideBySide(
      rounds,
      async () => 1000 / (await timedReads((o, b) => here.read(o, b), here.length)),
      async () => 1000 / (await timedReads((o, b) => there.read(o, b), there.length)),
    );
    const mibs = (runsPerSecond: number) => `${((READS * SIZE * runsPerSecond) / 2 ** 20).toFixed(0)} MiB/s`;
    row('Node: main → worker_threads vs same thread', mibs(r.subject), mibs(r.baseline), r.ratio, r.rounds);
    return r.ratio;
  } finally {
    await remote.close();
    await local.close();
    await worker.terminate();
  }
}

export async function workerRpcBench(rounds = 7) {
  console.log(`worker RPC: ${READS} reads of ${SIZE / 1024} KiB at QD${DEPTH}, each lane into its own buffer (goal in Chromium on opfs: ratio ≥ 0.7)`);
  const chromium = await chromiumRow(rounds);
  const node = await nodeRow(rounds);
  return { chromium, node };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--rounds');
  await workerRpcBench(i > 0 ? Number(process.argv[i + 1]) : undefined);
}
