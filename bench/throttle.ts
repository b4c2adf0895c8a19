/**
 * Issue #3's throttle benchmarks: accuracy on the real clock, fairness in a group, overhead of
 * a non-binding limit, and scale (many drives, many queued requests) on a virtual clock.
 */
import type { Clock } from '../src/clock.js';
import { BlockLayer, type Drive, VirtualClock } from '../src/index.js';
import { ThrottleGroup } from '../src/throttle/group.js';
import { account, computeWait, createState } from '../src/throttle/bucket.js';
import { type ThrottleLimits, validateLimits } from '../src/throttle/limits.js';
import { FlatVirtualClock } from './baseline/flat-virtual-clock.js';
import { fmtRate, median, row, sideBySide } from './util.js';

/** Keeps `depth` requests of `bs` bytes in flight until `stop()`; counts admissions after `from` ms. */
function saturate(drive: Drive, bs: number, depth: number, write: boolean) {
  const state = { stop: false, ops: 0, bytes: 0, counting: false };
  const done = Promise.all(
    Array.from({ length: depth }, async () => {
      const buf = new Uint8Array(bs);
      while (!state.stop) {
        await (write ? drive.write(0, buf) : drive.read(0, buf));
        if (state.counting) {
          state.ops++;
          state.bytes += bs;
        }
      }
    }),
  );
  return { state, done };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Achieved/limit for one limit on the real clock, measured after a 1 s warm-up (the burst). */
async function accuracy(limits: ThrottleLimits, bs: number, seconds: number): Promise<number> {
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ driver: 'null', size: '16G', throttle: limits });
  const [name, value] = Object.entries(limits)[0] as [string, number];
  const perRequest = name.startsWith('bps') ? bs : 1;
  // Demand at least twice the limit: enough requests in flight to cover 2× the rate.
  const depth = Math.min(4096, Math.max(16, Math.ceil((2 * value) / perRequest / 100)));
  const { state, done } = saturate(drive, bs, depth, false);
  await sleep(1000);
  state.counting = true;
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const elapsed = (performance.now() - t0) / 1000;
  state.counting = false;
  state.stop = true;
  const achieved = (name.startsWith('bps') ? state.bytes : state.ops) / elapsed;
  await drive.close();
  await done;
  return achieved / value;
}

/** Shares of 4 drives saturating one group on the real clock. */
async function fairness(seconds: number): Promise<number[]> {
  const layer = new BlockLayer();
  const drives = await Promise.all(
    [0, 1, 2, 3].map((i) => layer.openDrive({ id: `f${i}`, driver: 'null', size: '1G', throttle: { iopsTotal: 2000, group: 'fair' } })),
  );
  const runs = drives.map((d) => saturate(d, 4096, 64, false));
  await sleep(500);
  for (const r of runs) r.state.counting = true;
  await sleep(seconds * 1000);
  for (const r of runs) {
    r.state.counting = false;
    r.state.stop = true;
  }
  const total = runs.reduce((n, r) => n + r.state.ops, 0);
  await layer.close();
  await Promise.all(runs.map((r) => r.done));
  return runs.map((r) => r.state.ops / total);
}

/** Requests per second at QD32 on null, with or without a non-binding limit. */
async function throughput(limited: boolean, count: number): Promise<number> {
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ driver: 'null', size: '1G', ...(limited ? { throttle: { iopsTotal: 1e12 } } : {}) });
  let issued = 0;
  const buf = new Uint8Array(512);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (issued < count) {
        issued++;
        await drive.read(0, buf);
      }
    }),
  );
  const rate = count / ((performance.now() - t0) / 1000);
  await drive.close();
  return rate;
}

/**
 * ns per request of the bucket arithmetic alone under the overhead scenario's limit: QEMU's
 * leak, check and charge, in a tight loop with time moving 300 ns per request.
 */
function bucketArithmeticNs(count: number): number {
  const state = createState(validateLimits({ iopsTotal: 1e12 }), 0);
  let now = 0;
  let waited = 0;
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    now += 300;
    if (computeWait(state, 0, now) !== 0) waited++;
    account(state, 0, 512);
  }
  const ns = ((performance.now() - t0) * 1e6) / count;
  if (waited !== 0) throw new Error('bucketArithmeticNs: the limit was meant never to bind');
  return ns;
}

interface ScaleFigures {
  /** Wall time per admission (ns). */
  nsPerDispatch: number;
  /** CPU time (user + system) of this process per admission (ns): less noisy on a loaded machine. */
  cpuNsPerDispatch: number;
  /** Heap bytes (JS heap + ArrayBuffers) per queued request (after a gc, --expose-gc). */
  heapPerRequest: number;
  /** Wall time of layer.close() per drive (µs): every drive leaves the shared group. */
  closeUsPerDrive: number;
  /** Wall time per request of queuing the requests (ns): a user's test pays it before the clock runs. */
  enqueueNsPerRequest: number;
}

/** ns per admission and heap bytes per queued request with `drives` drives sharing one group. */
export async function scale(drives: number, queued: number, clock: Clock & { runUntilIdle(max: number): Promise<number> } = new VirtualClock()): Promise<ScaleFigures> {
  const layer = new BlockLayer({ clock });
  const list: Drive[] = [];
  for (let i = 0; i < drives; i++) list.push(await layer.openDrive({ driver: 'null', size: '1M', throttle: { iopsTotal: 1000, group: 'big' } }));
  const buf = new Uint8Array(512); // one shared buffer: only the request itself is measured
  const pending: Promise<unknown>[] = new Array(queued).fill(null); // allocated before the heap is read
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  // The heap plus ArrayBuffer backing stores (a queue's typed-array columns live outside the JS heap).
  const used = () => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const heap0 = used();
  const e0 = performance.now();
  for (let i = 0; i < queued; i++) pending[i] = list[i % drives].read(0, buf);
  const enqueueNsPerRequest = ((performance.now() - e0) * 1e6) / queued;
  gc?.();
  const heapPerRequest = (used() - heap0) / queued;
  // Let the group dispatch everything: iops 1000 → one admission per virtual millisecond.
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await clock.runUntilIdle(queued * 4);
  const nsPerDispatch = ((performance.now() - t0) * 1e6) / queued;
  const cpu = process.cpuUsage(cpu0);
  const cpuNsPerDispatch = ((cpu.user + cpu.system) * 1e3) / queued;
  await Promise.all(pending);
  const c0 = performance.now();
  await layer.close();
  const closeUsPerDrive = ((performance.now() - c0) * 1e3) / drives;
  return { nsPerDispatch, cpuNsPerDispatch, heapPerRequest, closeUsPerDrive, enqueueNsPerRequest };
}

/** CPU ns per timer of a clock alone: a chain of `count` timers 1 ms apart, each setting the next. */
async function bareTimers(clock: Clock & { runUntilIdle(max: number): Promise<number> }, count: number): Promise<number> {
  let n = 0;
  const next = () => {
    if (++n < count) clock.setTimer(clock.now() + 1e6, next);
  };
  clock.setTimer(clock.now() + 1e6, next);
  const cpu0 = process.cpuUsage();
  await clock.runUntilIdle(count * 2);
  const cpu = process.cpuUsage(cpu0);
  return ((cpu.user + cpu.system) * 1e3) / count;
}

/**
 * CPU ns per admission of the clock and the throttle group alone: the scale scenario's group
 * (iops 1000, `members` members) dispatching waiters that only count, no Drive, node or driver.
 */
async function groupDispatch(clock: Clock & { runUntilIdle(max: number): Promise<number> }, members: number, queued: number): Promise<number> {
  const group = new ThrottleGroup('dispatch', clock, true);
  group.setLimits({ iopsTotal: 1000 });
  const queues = Array.from({ length: members }, (_, i) => group.join(`m${i}`));
  let admitted = 0;
  const waiter = { bytes: 512, signal: undefined, admit: () => admitted++, cancel: () => {} };
  for (let i = 0; i < queued; i++) {
    const q = queues[i % members];
    if (q.tryAdmit(0, 512)) admitted++;
    else q.enqueueWaiter(0, waiter);
  }
  const cpu0 = process.cpuUsage();
  await clock.runUntilIdle(queued * 4);
  const cpu = process.cpuUsage(cpu0);
  if (admitted !== queued) throw new Error(`groupDispatch: ${admitted} of ${queued} admitted`);
  return ((cpu.user + cpu.system) * 1e3) / queued;
}

/** CPU ns of one `await null` (a microtask hop): how fast this machine is, to read the figures against. */
async function awaitHop(count: number): Promise<number> {
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < count; i++) await null;
  const cpu = process.cpuUsage(cpu0);
  return ((cpu.user + cpu.system) * 1e3) / count;
}

/** Goals of issue 10 for the scale scenario. */
const GOAL_NS_PER_ADMISSION = 1000;
const GOAL_HEAP_PER_REQUEST = 200;

export async function throttleBench(quick = true): Promise<Record<string, unknown>> {
  const seconds = quick ? 2 : 10;
  const results: Record<string, unknown> = {};
  console.log(`Throttle accuracy on the real clock (${seconds} s after a 1 s warm-up, null driver, demand ≥ 2× the limit)`);
  const cases: [string, ThrottleLimits, number][] = [
    ['iops 100', { iopsRead: 100 }, 4096],
    ['iops 1000', { iopsRead: 1000 }, 4096],
    ['iops 10000', { iopsRead: 10000 }, 4096],
    ['iops 50000', { iopsRead: 50000 }, 512],
    ['bps 1 MB/s', { bpsRead: 1_000_000 }, 4096],
    ['bps 100 MB/s', { bpsRead: 100_000_000 }, 65536],
    ['bps 1 GB/s', { bpsRead: 1_000_000_000 }, 1 << 20],
  ];
  for (const [label, limits, bs] of quick ? cases.filter((_, i) => i % 2 === 1) : cases) {
    const ratio = await accuracy(limits, bs, seconds);
    results[`accuracy ${label}`] = ratio;
    console.log(`  ${label.padEnd(14)} achieved/limit ${ratio.toFixed(4)}  (${((ratio - 1) * 100).toFixed(2)} %)`);
  }

  const shares = await fairness(seconds);
  results.fairness = shares;
  console.log(`Fairness: 4 drives saturating one group (iops 2000): shares ${shares.map((s) => (s * 100).toFixed(2)).join(' / ')} % (ideal 25)`);

  // Many short rounds: the limit costs about a tenth of a request, less than the machine's swings between rounds.
  const count = quick ? 200_000 : 500_000;
  const o = await sideBySide(quick ? 7 : 11, () => throughput(false, count), () => throughput(true, count));
  // What the limit adds per request, against what QEMU's arithmetic for it costs by itself.
  const addedNs = 1e9 / o.subject - 1e9 / o.baseline;
  const arithmeticNs = median([bucketArithmeticNs(count * 10), bucketArithmeticNs(count * 10), bucketArithmeticNs(count * 10)]);
  results.overhead = { ...o, addedNsPerRequest: addedNs, bucketArithmeticNs: arithmeticNs };
  console.log('Overhead: null driver, QD32, requests/s (ratio: median of the rounds\' ratios)');
  row('Drive with a non-binding limit vs no limit', fmtRate(o.subject), fmtRate(o.baseline), o.ratio, o.rounds);
  console.log(
    `  the limit adds ${addedNs.toFixed(0)} ns to a ${(1e9 / o.baseline).toFixed(0)} ns request; leak, check and charge alone (a tight loop) take ${arithmeticNs.toFixed(0)} ns`,
  );

  const timers = quick ? 100_000 : 1_000_000;
  const bare = await sideBySide(
    3,
    () => bareTimers(new FlatVirtualClock(), timers),
    () => bareTimers(new VirtualClock(), timers),
  );
  const hop = median([await awaitHop(timers), await awaitHop(timers)]);
  results.virtualClockTimer = { ...bare, awaitHopNs: hop, unit: 'CPU ns per timer (lower is better)' };
  console.log(`VirtualClock alone: ${timers} chained timers, CPU ns per timer; baseline: the flat-array clock with a loop turn per timer`);
  row('VirtualClock per timer (CPU ns)', bare.subject.toFixed(0), bare.baseline.toFixed(0), bare.ratio, bare.rounds);
  console.log(`  machine reference: one \`await null\` costs ${hop.toFixed(0)} ns CPU here (read the figures against it when comparing machines)`);

  const queued = quick ? 100_000 : 1_000_000;
  console.log(`Clock and throttle group alone (no drive, node or driver): ${quick ? '100k' : '1M'} queued waiters, iops 1000, CPU ns per admission`);
  for (const n of quick ? [10] : [10, 10000]) {
    const d = await sideBySide(
      3,
      () => groupDispatch(new FlatVirtualClock(), n, queued),
      () => groupDispatch(new VirtualClock(), n, queued),
    );
    results[`groupDispatch ${n}`] = { ...d, unit: 'CPU ns per admission (lower is better)' };
    row(`${n} members: clock + group per admission (CPU ns)`, d.subject.toFixed(0), d.baseline.toFixed(0), d.ratio, d.rounds);
  }
  console.log(`Scale: one group (iops 1000), ${quick ? '100k' : '1M'} queued requests, virtual clock runUntilIdle; baseline: the flat-array clock with a loop turn per timer`);
  console.log(`  goals: ≤ ${GOAL_NS_PER_ADMISSION} ns per admission, ≤ ${GOAL_HEAP_PER_REQUEST} heap bytes per queued request`);
  for (const n of quick ? [10, 1000] : [10, 1000, 10000]) {
    // Alternate which clock goes first, so neither always meets a warmer or cooler machine.
    const rounds = 3;
    const now: ScaleFigures[] = [];
    const base: ScaleFigures[] = [];
    for (let r = 0; r < rounds; r++) {
      if (r % 2 === 0) {
        now.push(await scale(n, queued));
        base.push(await scale(n, queued, new FlatVirtualClock()));
      } else {
        base.push(await scale(n, queued, new FlatVirtualClock()));
        now.push(await scale(n, queued));
      }
    }
    const pick = (list: ScaleFigures[], key: keyof ScaleFigures) => median(list.map((f) => f[key]));
    const figures = (list: ScaleFigures[]): ScaleFigures => ({
      nsPerDispatch: pick(list, 'nsPerDispatch'),
      cpuNsPerDispatch: pick(list, 'cpuNsPerDispatch'),
      heapPerRequest: pick(list, 'heapPerRequest'),
      closeUsPerDrive: pick(list, 'closeUsPerDrive'),
      enqueueNsPerRequest: pick(list, 'enqueueNsPerRequest'),
    });
    const s = figures(now);
    const b = figures(base);
    results[`scale ${n}`] = { ...s, baselineClock: b };
    row(`${n} drives: ns per admission (wall)`, s.nsPerDispatch.toFixed(0), b.nsPerDispatch.toFixed(0), s.nsPerDispatch / b.nsPerDispatch);
    row(`${n} drives: ns per admission (CPU)`, s.cpuNsPerDispatch.toFixed(0), b.cpuNsPerDispatch.toFixed(0), s.cpuNsPerDispatch / b.cpuNsPerDispatch);
    console.log(`  ${`${n} drives: heap bytes per queued request`.padEnd(46)} ${s.heapPerRequest.toFixed(0).padStart(12)}  (goal ≤ ${GOAL_HEAP_PER_REQUEST})`);
    // Each drive leaving a shared group once walked all the members: closing grew with the square of their number.
    console.log(`  ${`${n} drives: close µs per drive (wall)`.padEnd(46)} ${s.closeUsPerDrive.toFixed(1).padStart(12)}`);
    row(`${n} drives: ns per queued request (enqueue, wall)`, s.enqueueNsPerRequest.toFixed(0), b.enqueueNsPerRequest.toFixed(0), s.enqueueNsPerRequest / b.enqueueNsPerRequest);
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) await throttleBench(!process.argv.includes('--full'));
