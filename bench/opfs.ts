/**
 * The opfs driver in Chromium: 4 KiB random writes and reads at QD16 through a Drive on an opfs
 * node (sync access handle, in a dedicated Worker) against a bare FileSystemSyncAccessHandle
 * loop doing the same I/O in the same worker, side by side (alternating rounds, median of the
 * paired ratios). `npx tsx bench/opfs.ts [rounds]`; needs Debian's chromium. The goal: ≥ 0.8×.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { serveStatic } from '../examples/browser/static-server.js';
import { buildBrowser } from '../scripts/build-browser.js';
import { childrenCpuMs, TICK_MS } from './browser-cpu.js';
import { fmtRate, median, row, sideBySide } from './util.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const FILE_SIZE = 64 << 20;
const BS = 4096;
const QD = 16;
const OPS = 20_000;
/** Reads are cheap (a few µs of CPU each): a read round does more of them, so its worker CPU spans enough 10 ms ticks to compare. */
const READ_OPS = 100_000;

// The worker: one bare handle and one drive, opened once; each message runs one timed round.
const WORKER = `
const bl = await import('/dist/blocklayer.js');
const FILE_SIZE = ${FILE_SIZE}, BS = ${BS}, QD = ${QD}, WRITE_OPS = ${OPS}, READ_OPS = ${READ_OPS};
const OPS = Math.max(WRITE_OPS, READ_OPS);
const root = await navigator.storage.getDirectory();
const dir = await root.getDirectoryHandle('bench', { create: true });
const bareFile = await dir.getFileHandle('bare.raw', { create: true });
const bare = await bareFile.createSyncAccessHandle();
bare.truncate(FILE_SIZE);
const layer = new bl.BlockLayer();
const drive = await layer.openDrive({ driver: 'opfs', path: 'bench/drive.raw', create: true, size: FILE_SIZE });
// the same offsets for both sides (a fixed LCG)
const offsets = new Float64Array(OPS);
let x = 12345;
for (let i = 0; i < OPS; i++) {
  x = (x * 1103515245 + 12345) >>> 0;
  offsets[i] = (x % (FILE_SIZE / BS)) * BS;
}
const data = new Uint8Array(BS).fill(0x5a);
const nul = await layer.openDrive({ driver: 'null', size: FILE_SIZE, readZeroes: true });
const rounds = {
  bareWrite() {
    const at = { at: 0 };
    for (let i = 0; i < WRITE_OPS; i++) {
      at.at = offsets[i];
      bare.write(data, at);
    }
    bare.flush();
  },
  bareRead() {
    const at = { at: 0 };
    const buf = new Uint8Array(BS);
    for (let i = 0; i < READ_OPS; i++) {
      at.at = offsets[i];
      bare.read(buf, at);
    }
  },
  async driveWrite() {
    let next = 0;
    await Promise.all(Array.from({ length: QD }, async () => {
      while (next < WRITE_OPS) await drive.write(offsets[next++], data);
    }));
    await drive.flush();
  },
  async driveRead() {
    let next = 0;
    await Promise.all(Array.from({ length: QD }, async () => {
      const buf = new Uint8Array(BS);
      while (next < READ_OPS) await drive.read(offsets[next++], buf);
    }));
  },
};
// the Drive's own cost per request, over a driver that does nothing
rounds.nullRead = async () => {
    let next = 0;
    await Promise.all(Array.from({ length: QD }, async () => {
      const buf = new Uint8Array(BS);
      while (next < READ_OPS) await nul.read(offsets[next++], buf);
    }));
};
// the driver's own instance, under no Drive: where a gap between the two rows above comes from
const inst = drive.node['instance'];
rounds.instRead = async () => {
    const buf = new Uint8Array(BS);
    for (let i = 0; i < READ_OPS; i++) await inst.read(offsets[i], buf);
};
self.onmessage = async ({ data: name }) => {
  const t0 = performance.now();
  await rounds[name]();
  self.postMessage((name.endsWith('Write') ? WRITE_OPS : READ_OPS) / ((performance.now() - t0) / 1000));
};
self.postMessage('ready');
`;

const PAGE = `<!doctype html><script type="module">
const w = new Worker('/bench/worker.js', { type: 'module' });
let pending;
const ready = new Promise((r) => (pending = r));
w.onmessage = ({ data }) => pending(data);
await ready;
window.round = (name) => new Promise((r) => { pending = r; w.postMessage(name); });
window.ready = true;
</script>`;

/** /proc's stat file of the page's dedicated Worker thread (Chromium names it "DedicatedWorker thread"), in a process under this one. */
function workerThreadStat(): string {
  const ours = (pid: number) => {
    for (let p = pid; p > 1; ) {
      if (p === process.pid) return true;
      try {
        const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
        p = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      } catch {
        return false;
      }
    }
    return false;
  };
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || !ours(Number(pid))) continue;
    try {
      for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
        if (fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('DedicatedWorker')) return `/proc/${pid}/task/${tid}/stat`;
      }
    } catch {
      // gone meanwhile
    }
  }
  throw new Error('opfs bench: no DedicatedWorker thread found under this process');
}

/** A thread's CPU time (user + system, ms) from its /proc stat file. */
function threadCpuMs(statFile: string): number {
  const stat = fs.readFileSync(statFile, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_MS;
}

export async function opfsBench(rounds = 7): Promise<Record<string, unknown>> {
  if (!fs.existsSync(CHROMIUM)) {
    console.log('opfs driver: skipped (no chromium)');
    return { skipped: true };
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-opfs-bench-'));
  fs.mkdirSync(path.join(tmp, 'bench'));
  fs.writeFileSync(path.join(tmp, 'bench/worker.js'), WORKER);
  fs.writeFileSync(path.join(tmp, 'bench/index.html'), PAGE);
  await buildBrowser(path.join(tmp, 'dist'));
  const server = await serveStatic({ '/dist/': path.join(tmp, 'dist'), '/bench/': path.join(tmp, 'bench') });
  const { chromium } = await import('playwright-core');
  const context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`${server.url}/bench/index.html`);
    await page.waitForFunction(() => (globalThis as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 30_000 });
    // each round's browser CPU (all of chromium's processes: load-independent, unlike the rate)
    // and the worker thread's alone (where both sides run: none of the other processes' idle
    // ticks), by round name in order
    const cpu = new Map<string, number[]>();
    const workerCpu = new Map<string, number[]>();
    const worker = workerThreadStat();
    const push = (into: Map<string, number[]>, name: string, v: number) => into.set(name, [...(into.get(name) ?? []), v]);
    const round = (name: string) => async () => {
      const cpu0 = childrenCpuMs();
      const w0 = threadCpuMs(worker);
      const rate = await page.evaluate((n) => (globalThis as unknown as { round: (n: string) => Promise<number> }).round(n), name);
      push(workerCpu, name, threadCpuMs(worker) - w0);
      push(cpu, name, childrenCpuMs() - cpu0);
      return rate;
    };
    /** The CPU per request (of the browser, or of the worker thread) of `subject` against `baseline` over their last `rounds` rounds (paired): µs each and the median ratio baseline/subject (≥ 1: cheaper). */
    const cpuRow = (label: string, ops: number, baseline: string, subject: string, of = cpu, what = 'browser') => {
      const b = (of.get(baseline) ?? []).slice(-rounds);
      const s = (of.get(subject) ?? []).slice(-rounds);
      const ratios = s.map((x, i) => Math.max(b[i], TICK_MS) / Math.max(x, TICK_MS)).sort((x, y) => x - y);
      const us = (ms: number) => `${((ms * 1000) / ops).toFixed(2)} µs`;
      row(`${label} (${what} CPU/op)`, us(median(s)), us(median(b)), median(ratios), ratios);
      return { subjectCpuMs: median(s), baselineCpuMs: median(b), cpuRatio: median(ratios) };
    };
    console.log(`opfs driver in Chromium: ${OPS} (writes) or ${READ_OPS} (reads) random ${BS >> 10} KiB requests in a ${FILE_SIZE >> 20} MiB file, a Drive at QD${QD} vs a bare sync-access-handle loop, same worker, median of ${rounds} paired rounds`);
    console.log(`  (load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs)`);
    // one warm-up round each, not counted
    for (const n of ['bareWrite', 'driveWrite', 'bareRead', 'driveRead']) await round(n)();
    const writes = await sideBySide(rounds, round('bareWrite'), round('driveWrite'));
    row('4 KiB random writes (ops/s)', fmtRate(writes.subject), fmtRate(writes.baseline), writes.ratio, writes.rounds);
    const writesCpu = cpuRow('4 KiB random writes', OPS, 'bareWrite', 'driveWrite');
    const writesWorkerCpu = cpuRow('4 KiB random writes', OPS, 'bareWrite', 'driveWrite', workerCpu, 'worker');
    const reads = await sideBySide(rounds, round('bareRead'), round('driveRead'));
    row('4 KiB random reads (ops/s)', fmtRate(reads.subject), fmtRate(reads.baseline), reads.ratio, reads.rounds);
    const readsCpu = cpuRow('4 KiB random reads', READ_OPS, 'bareRead', 'driveRead');
    const readsWorkerCpu = cpuRow('4 KiB random reads', READ_OPS, 'bareRead', 'driveRead', workerCpu, 'worker');
    const direct = await sideBySide(rounds, round('bareRead'), round('instRead'));
    row('  the driver instance alone, QD1 (ops/s)', fmtRate(direct.subject), fmtRate(direct.baseline), direct.ratio, direct.rounds);
    const nul = await sideBySide(rounds, round('bareRead'), round('nullRead'));
    row('  a Drive on the null driver, QD16 (ops/s)', fmtRate(nul.subject), fmtRate(nul.baseline), nul.ratio, nul.rounds);
    console.log(`  (CPU in ${TICK_MS} ms ticks over the requests of a round; a ratio is rate-like: bare CPU / drive CPU)`);
    return { writes, reads, driverAlone: direct, nullDrive: nul, writesCpu, readsCpu, writesWorkerCpu, readsWorkerCpu };
  } finally {
    await context.close();
    await server.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await opfsBench(process.argv[2] ? Number(process.argv[2]) : undefined);
