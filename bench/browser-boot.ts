/**
 * The second boot of the persistent browser example (#26), in headless Chromium: v86 boots the
 * boot-count guest (tests/fixtures/guest/boot-count.asm) from the http qcow2 base with its qcow2
 * overlay already in OPFS (the layer in a dedicated Worker, the drive reached through
 * connectWorkerLayer and toV86Disk), against v86 booting the same disk as a raw image from its own
 * async http disk (`{ url, async: true, size }`). Each round reloads the page (a second visit), boots
 * v86 once from an in-memory copy of the image (v86's own start-up after a reload, its wasm compiled
 * and BIOS fetched, is neither side's), then runs one boot of each side, alternating which goes
 * first; whatever modules the overlay side loads on its first open stay in its time (none now: the browser bundle has its drivers in the chunks the worker loads at start). A boot is timed in the page from its
 * start (the overlay's open included) to the guest's DONE; as in the example, v86 starts on the drive
 * still opening (toV86Disk of the open's promise) and waits for it when it loads its disk, as it
 * waits for its own http disk's load(); its reads shorter than 64 KiB fetch the 64 KiB chunk around
 * them, kept in the page (toV86Disk's `readahead`, as in the example). Also the CPU time of the browser's
 * processes per boot (utime + stime of every chromium process under this one, from /proc) and the
 * guest instructions v86 counted. Ratio = time of ours / v86's. Goal: ≤ 1.1.
 *
 *   npx tsx bench/browser-boot.ts [--rounds N] [--trace] [--readahead BYTES]
 *
 * --trace prints each boot's marks (v86's load() of the disk, its first read), each read of v86
 * with how long it waited and how many reached the drive in the worker, and the static server's
 * requests during it, with when they started and ended. --readahead sets the page's read-ahead (0: off).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeBootImage } from '../examples/browser/serve.js';
import { type ServedRequest, serveStatic } from '../examples/browser/static-server.js';
import { buildBrowser } from '../scripts/build-browser.js';
import { assembleBootSector, BOOT_COUNT_ASM, buildDisk, SEABIOS_DIR } from '../tests/helpers/v86-boot.js';
import { haveProgram } from '../tests/helpers/tools.js';
import { childrenCpuMs, TICK_MS } from './browser-cpu.js';
import { median, row } from './util.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOT = path.resolve(import.meta.dirname, '..');
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
interface Boot {
  ms: number;
  serial: string;
  instructions: number;
  created?: boolean;
  /** Of `ms`, the time until the overlay was found and open (its modules loaded in the worker, the base's header read over http). */
  openMs?: number;
  /**
   * With --trace: ms since the boot's start when v86 called the disk's load() and its first get, how
   * many reads (get_and_cache and get) and their summed wait, each of them, and how many reached the drive.
   */
  marks?: { load?: number; firstGet?: number; reads: number; readMs: number; list: { op: string; offset: number; len: number; at: number; ms: number }[]; driveReads?: number };
  /** The boot's start and end, ms since the epoch (the static server's clock). */
  t0Abs: number;
  endAbs: number;
}

/** With --trace: one line per boot, what happened when (ms since its start), and the requests the static server answered meanwhile. */
function traceBoot(side: string, r: Boot, timeline: ServedRequest[]): void {
  const at = (t: number) => (t - r.t0Abs).toFixed(0);
  const during = timeline.filter((q) => q.start >= r.t0Abs - 1 && q.start <= r.endAbs);
  const m = r.marks;
  const reached = m?.driveReads === undefined ? '' : ` (${m.driveReads} reached the drive)`;
  const marks = m === undefined ? '' : ` load() ${m.load?.toFixed(0)}, first get ${m.firstGet?.toFixed(0)}, ${m.reads} reads${reached} waiting ${m.readMs.toFixed(1)} ms,`;
  console.log(`  [trace] ${side}: ${r.ms.toFixed(0)} ms,${r.openMs === undefined ? '' : ` open ${r.openMs.toFixed(0)},`}${marks} ${during.length} requests`);
  for (const g of m?.list ?? []) console.log(`    ${g.at.toFixed(0).padStart(5)} ${g.op} ${g.offset}+${g.len}: answered in ${g.ms.toFixed(1)} ms`);
  for (const q of during) console.log(`    ${at(q.start).padStart(5)}–${at(q.end).padStart(5)} ${q.status} ${q.request} (${q.bytes} B)`);
}

export async function browserBootBench(rounds = 5, trace = false, readahead?: number): Promise<Record<string, unknown> | null> {
  console.log('browser second boot: v86 from an http qcow2 base + qcow2 overlay in OPFS (worker) vs v86 own async http disk (raw), goal ratio ≤ 1.1');
  if (!fs.existsSync(CHROMIUM) || !fs.existsSync(path.join(SEABIOS_DIR, 'bios.bin')) || !haveProgram('nasm')) {
    console.log('  skipped: needs Debian chromium, seabios and nasm');
    return null;
  }
  const { chromium } = await import('playwright-core');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-browser-boot-'));
  const images = path.join(dir, 'images');
  fs.mkdirSync(images);
  await buildBrowser(path.join(dir, 'dist'));
  await makeBootImage(images, BOOT_COUNT_ASM, 'boot-count.qcow2');
  const disk = buildDisk(await assembleBootSector(dir, BOOT_COUNT_ASM));
  fs.writeFileSync(path.join(images, 'boot-count.raw'), disk);
  const server = await serveStatic({
    '/dist/': path.join(dir, 'dist'),
    '/v86/': path.join(ROOT, 'node_modules/v86/build'),
    '/bios/': SEABIOS_DIR,
    '/images/': images,
    '/page/': path.join(ROOT, 'tests/fixtures/browser'),
    '/': path.join(ROOT, 'examples/browser'),
  });
  const context = await chromium.launchPersistentContext(path.join(dir, 'profile'), { executablePath: CHROMIUM, headless: true, args: ARGS });
  const url = `${server.url}/page/persist-bench.html?base=/images/boot-count.qcow2&raw=/images/boot-count.raw&size=${disk.length}${trace ? '&trace' : ''}${readahead === undefined ? '' : `&readahead=${readahead}`}`;
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const load = async () => {
      await page.goto(url);
      await page.waitForFunction(() => (globalThis as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 30_000 });
    };
    type Fn = 'bootOverlay' | 'bootV86Http' | 'warmUp';
    const run = async (fn: Fn) => {
      const cpu0 = childrenCpuMs();
      const r = await page.evaluate((f) => (globalThis as unknown as Record<string, () => Promise<Boot>>)[f](), fn);
      if (!r.serial.includes('DONE') || r.serial.includes('IO ERR')) throw new Error(`${fn}: the guest failed: ${JSON.stringify(r.serial)}`);
      if (trace && fn !== 'warmUp') traceBoot(fn, r, server.timeline);
      return { ...r, cpuMs: childrenCpuMs() - cpu0 };
    };
    await load();
    await page.evaluate(() => (globalThis as unknown as { wipe: () => Promise<unknown> }).wipe());
    // the first visit: lays the overlay, compiles v86's wasm, fills the caches; not measured
    const first = await run('bootOverlay');
    if (!first.created) throw new Error('the first boot found an overlay: not a clean start');
    await run('bootV86Http');
    const ours: (Boot & { cpuMs: number })[] = [];
    const theirs: (Boot & { cpuMs: number })[] = [];
    for (let i = 0; i < rounds; i++) {
      await load();
      await run('warmUp');
      if (i % 2 === 0) {
        ours.push(await run('bootOverlay'));
        theirs.push(await run('bootV86Http'));
      } else {
        theirs.push(await run('bootV86Http'));
        ours.push(await run('bootOverlay'));
      }
      if (!ours.at(-1)?.serial.includes('FOUND')) throw new Error(`the second boot did not find the marker: ${JSON.stringify(ours.at(-1)?.serial)}`);
    }
    const ratios = ours.map((o, i) => o.ms / theirs[i].ms).sort((a, b) => a - b);
    const cpuRatios = ours.map((o, i) => o.cpuMs / Math.max(theirs[i].cpuMs, TICK_MS)).sort((a, b) => a - b);
    const ms = (v: number) => `${v.toFixed(0)} ms`;
    const oursMs = median(ours.map((r) => r.ms));
    const theirsMs = median(theirs.map((r) => r.ms));
    const oursCpu = median(ours.map((r) => r.cpuMs));
    const theirsCpu = median(theirs.map((r) => r.cpuMs));
    row('second boot (wall): OPFS overlay vs v86 http', ms(oursMs), ms(theirsMs), median(ratios), ratios);
    row('second boot (browser CPU)', ms(oursCpu), ms(theirsCpu), median(cpuRatios), cpuRatios);
    const openMs = median(ours.map((r) => r.openMs ?? 0));
    console.log(`  ${'  of which the overlay found and opened'.padEnd(46)} ${ms(openMs).padStart(12)}`);
    const instr = (v: number) => `${(v / 1e6).toFixed(2)}M`;
    const oursInstr = median(ours.map((r) => r.instructions));
    const theirsInstr = median(theirs.map((r) => r.instructions));
    row('guest instructions to DONE', instr(oursInstr), instr(theirsInstr), oursInstr / theirsInstr);
    return { ratio: median(ratios), rounds: ratios, oursMs, theirsMs, openMs, cpuRatio: median(cpuRatios), oursCpuMs: oursCpu, theirsCpuMs: theirsCpu, oursInstructions: oursInstr, theirsInstructions: theirsInstr };
  } finally {
    await context.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--rounds');
  const ra = process.argv.indexOf('--readahead');
  await browserBootBench(i > 0 ? Number(process.argv[i + 1]) : undefined, process.argv.includes('--trace'), ra > 0 ? Number(process.argv[ra + 1]) : undefined);
}
