/**
 * Soak: hundreds of drives in throttle groups on the real clock for minutes, with everything a
 * VM manager does at run time going on at once — random reads and writes at a queue depth,
 * AbortSignal aborts, new limits, drives moving between groups, drives closed and reopened.
 *
 *   node --expose-gc --import tsx bench/soak.ts [--minutes N] [--drives N] [--groups N]
 *        [--depth N] [--phase-seconds N] [--tolerance F] [--seed N]
 *
 * It checks, and exits 1 if one fails:
 *  - every request settled exactly once: issued = resolved + rejected, nothing left in flight
 *    after close, no settlement twice (a per-request guard), every resolved request reached the
 *    driver exactly once and every canceled one never did (a probe filter under each drive sees
 *    each request's id, stamped in its buffer), no error other than ECANCELED;
 *  - per group, the achieved rate of each limited bucket over the last seconds of every phase
 *    (limits unchanged in that window, membership churning) is within the tolerance of its limit;
 *  - heap and RSS after gc do not grow from the end of the first phase to the end of the last
 *    (sampled every 5 s in between, without gc, for the table);
 *  - event-loop delay (perf_hooks.monitorEventLoopDelay, from the end of the first phase; p99,
 *    max) stays under a bound. On a machine shared with other busy processes, the OS scheduler's
 *    pauses show up here too: the bounds are generous, and the table prints the load average.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { BlockLayer, type Drive, defineDriver, isBlockError, type ThrottleLimits } from '../src/index.js';

import os from 'node:os';
import { prng } from '../src/bench/prng.js';

const MiB = 1024 * 1024;
/** Request sizes (bytes), drawn uniformly; each is at least 8 so the id stamp fits. */
const SIZES = [512, 4096, 16384] as const;
const MAX_SIZE = 16384;
/** Stamp in the first 8 bytes of a request's buffer: magic, then the request id. */
const MAGIC = 0x534f414b; // 'SOAK'


/** Options of a soak run. */
export interface SoakOptions {
  minutes: number;
  drives: number;
  groups: number;
  depth: number;
  phaseSeconds: number;
  tolerance: number;
  seed: number;
  /** Event-loop delay bounds (ms). */
  lagP99Ms: number;
  lagMaxMs: number;
  /** Heap growth allowed between the first and last sample after gc (bytes, and fraction of the first). */
  heapGrowthBytes: number;
  /** RSS growth allowed between the first and last sample after gc (bytes). */
  rssGrowthBytes: number;
}

const DEFAULTS: SoakOptions = {
  minutes: 2,
  drives: 300,
  groups: 30,
  depth: 8,
  phaseSeconds: 20,
  tolerance: 0.05,
  seed: 1,
  lagP99Ms: 50,
  lagMaxMs: 500,
  heapGrowthBytes: 16 * MiB,
  rssGrowthBytes: 64 * MiB,
};

/** One request as the soak tracks it while it is in flight. */
interface Rec {
  group: number;
  write: boolean;
  bytes: number;
  /** Calls of the probe driver carrying this request's id. */
  calls: number;
  /** Settlements seen by the guard (must end at 1). */
  settled: number;
  abortTimer: NodeJS.Timeout | undefined;
}

/** A drive position: the drive open on it now (if any), its group, its workers. */
interface Slot {
  id: string;
  drive: Drive | null;
  group: number;
  closing: boolean;
  workers: Promise<void>[];
}

/** A kind of limits a group gets for a phase; `allBind`: every bucket must reach its limit. */
interface LimitKind {
  name: string;
  make: (r: () => number) => ThrottleLimits;
  allBind: boolean;
}

const between = (r: () => number, lo: number, hi: number) => Math.round(lo + r() * (hi - lo));

/**
 * The limit kinds. Rates are modest on purpose (about 6k requests/s over 30 groups): the soak
 * checks correctness over time, and must not become CPU-bound on a small or busy machine, where
 * a starved event loop would lower achieved rates for reasons that are not the throttle's.
 */
const KINDS: LimitKind[] = [
  { name: 'iops', make: (r) => ({ iopsTotal: between(r, 50, 400) }), allBind: true },
  { name: 'iops r/w', make: (r) => ({ iopsRead: between(r, 30, 200), iopsWrite: between(r, 30, 200) }), allBind: true },
  { name: 'bps', make: (r) => ({ bpsTotal: between(r, 256, 2048) * 1024 }), allBind: true },
  { name: 'bps r/w', make: (r) => ({ bpsRead: between(r, 128, 1024) * 1024, bpsWrite: between(r, 128, 1024) * 1024 }), allBind: true },
  {
    name: 'iops burst',
    make: (r) => {
      const x = between(r, 50, 300);
      return { iopsTotal: x, iopsTotalMax: 3 * x, iopsTotalMaxLength: 2 };
    },
    allBind: true,
  },
  { name: 'iops+bps', make: (r) => ({ iopsTotal: between(r, 50, 400), bpsTotal: between(r, 512, 2048) * 1024 }), allBind: false },
];

/** Cumulative completions of a group: reads, writes, read bytes, written bytes. */
type Counters = Float64Array[]; // [readOps, writeOps, readBytes, writeBytes], each indexed by group

/** Achieved rate of one limited bucket over a window. */
function achieved(bucket: string, c0: Counters, c1: Counters, g: number, seconds: number): number | undefined {
  const d = (i: number) => (c1[i][g] - c0[i][g]) / seconds;
  switch (bucket) {
    case 'iopsTotal':
      return d(0) + d(1);
    case 'iopsRead':
      return d(0);
    case 'iopsWrite':
      return d(1);
    case 'bpsTotal':
      return d(2) + d(3);
    case 'bpsRead':
      return d(2);
    case 'bpsWrite':
      return d(3);
    default:
      return undefined; // Max / MaxLength / iopsSize: not an average rate
  }
}

/** Sampling interval of the event-loop delay monitor (ms). */
const LAG_RESOLUTION_MS = 10;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`;

/** Runs the soak; prints a short table and returns the figures with `ok` (all checks passed). */
export async function soakBench(input: Partial<SoakOptions> = {}): Promise<Record<string, unknown> & { ok: boolean }> {
  const o: SoakOptions = { ...DEFAULTS, ...input };
  const groups = Math.max(1, Math.min(o.groups, Math.floor(o.drives / 2)));
  const minMembers = o.drives >= 2 * groups ? 2 : 1;
  const phases = Math.max(1, Math.floor((o.minutes * 60) / o.phaseSeconds));
  const windowS = Math.min(10, o.phaseSeconds / 2);
  const rand = prng(o.seed);
  const gc = (globalThis as { gc?: () => void }).gc;

  // ---- request bookkeeping --------------------------------------------------------------
  const inflight = new Map<number, Rec>();
  let nextId = 1;
  const n = { issued: 0, resolved: 0, canceled: 0, otherErrors: 0, aborts: 0, doubleSettled: 0, notOnce: 0, canceledTouched: 0, unknownCalls: 0, untagged: 0 };
  const otherCodes = new Map<string, number>();
  const counters: Counters = [0, 1, 2, 3].map(() => new Float64Array(groups));

  /** The probe: a pass-through filter that records which request ids reach the driver. */
  const probe = defineDriver({
    name: 'soakprobe',
    capabilities: { kind: 'filter' },
    schema: z.object({}).strict(),
    children: { file: 'required' },
    async open({ children }) {
      const file = children.get('file')!;
      const see = (buf: Uint8Array) => {
        const v = new DataView(buf.buffer, buf.byteOffset, Math.min(8, buf.length));
        if (buf.length < 8 || v.getUint32(0) !== MAGIC) {
          n.untagged++;
          return;
        }
        const rec = inflight.get(v.getUint32(4));
        if (rec === undefined) n.unknownCalls++;
        else rec.calls++;
      };
      return {
        alignment: 1,
        length: () => file.length,
        read(offset, buffer) {
          see(buffer);
          return file.read(offset, buffer);
        },
        write(offset, data) {
          see(data);
          return file.write(offset, data);
        },
        flush: () => file.flush(),
        discard: (offset, length) => file.discard(offset, length),
        writeZeroes: (offset, length) => file.writeZeroes(offset, length),
        blockStatus: (offset, length) => file.blockStatus(offset, length),
        async close() {},
      };
    },
  });

  const settle = (id: number, rec: Rec, error: unknown) => {
    // The guard: a request settles once; a second settlement of the same record is a bug.
    if (rec.settled++ > 0) {
      n.doubleSettled++;
      return;
    }
    if (rec.abortTimer !== undefined) clearTimeout(rec.abortTimer);
    inflight.delete(id);
    if (error === undefined) {
      n.resolved++;
      if (rec.calls !== 1) n.notOnce++;
      const g = rec.group;
      if (rec.write) {
        counters[1][g]++;
        counters[3][g] += rec.bytes;
      } else {
        counters[0][g]++;
        counters[2][g] += rec.bytes;
      }
    } else if (isBlockError(error, 'ECANCELED')) {
      n.canceled++;
      if (rec.calls !== 0) n.canceledTouched++;
    } else {
      n.otherErrors++;
      const code = isBlockError(error) ? error.code : String(error);
      otherCodes.set(code, (otherCodes.get(code) ?? 0) + 1);
    }
  };

  // ---- drives, groups and their workers ---------------------------------------------------
  const layer = new BlockLayer({ drivers: [probe] });
  const groupName = (g: number) => `g${String(g).padStart(2, '0')}`;
  const limits: { kind: LimitKind; limits: ThrottleLimits }[] = [];
  for (let g = 0; g < groups; g++) {
    const kind = KINDS[g % KINDS.length];
    limits.push({ kind, limits: kind.make(rand) });
    layer.createThrottleGroup(groupName(g), limits[g].limits);
  }
  const members = new Array<number>(groups).fill(0);
  let stopping = false;

  const worker = async (slot: Slot, drive: Drive, k: number) => {
    const write = k % 2 === 1; // half the slots read, half write: both directions stay saturated
    const buffer = new Uint8Array(MAX_SIZE);
    const stamp = new DataView(buffer.buffer);
    const r = prng(o.seed * 7919 + nextId);
    while (!stopping && !slot.closing && slot.drive === drive) {
      const size = SIZES[Math.floor(r() * SIZES.length)];
      const offset = Math.floor(r() * ((drive.length - size) / 512)) * 512;
      const view = size === MAX_SIZE ? buffer : buffer.subarray(0, size);
      const id = nextId++;
      stamp.setUint32(0, MAGIC);
      stamp.setUint32(4, id);
      const rec: Rec = { group: slot.group, write, bytes: size, calls: 0, settled: 0, abortTimer: undefined };
      inflight.set(id, rec);
      n.issued++;
      let signal: AbortSignal | undefined;
      const p = r();
      if (p < 0.05) {
        // 5 % carry a signal: aborted before the call, a microtask after it, or up to 50 ms later.
        const ac = new AbortController();
        signal = ac.signal;
        n.aborts++;
        if (p < 0.01) ac.abort();
        else if (p < 0.03) queueMicrotask(() => ac.abort());
        else rec.abortTimer = setTimeout(() => ac.abort(), Math.floor(r() * 50));
      }
      try {
        if (write) await drive.write(offset, view, signal ? { signal } : undefined);
        else await drive.read(offset, view, signal ? { signal } : undefined);
        settle(id, rec, undefined);
      } catch (e) {
        settle(id, rec, e);
      }
    }
  };

  const open = async (slot: Slot, g: number) => {
    const backend = rand() < 0.5 ? { driver: 'null', size: '1G' } : { driver: 'memory', size: '256K' };
    const drive = await layer.openDrive({ id: slot.id, driver: 'soakprobe', file: backend, throttle: { group: groupName(g) } });
    slot.drive = drive;
    slot.group = g;
    slot.closing = false;
    members[g]++;
    slot.workers = Array.from({ length: o.depth }, (_, k) => worker(slot, drive, k));
  };

  const slots: Slot[] = Array.from({ length: o.drives }, (_, i) => ({ id: `d${String(i).padStart(4, '0')}`, drive: null, group: i % groups, closing: false, workers: [] }));
  const tOpen0 = performance.now();
  for (const s of slots) await open(s, s.group);
  const openS = (performance.now() - tOpen0) / 1000;

  /** A random open drive whose group keeps at least minMembers without it. */
  const pickMovable = (): Slot | undefined => {
    for (let tries = 0; tries < 20; tries++) {
      const s = slots[Math.floor(rand() * slots.length)];
      if (s.drive !== null && !s.closing && members[s.group] > minMembers) return s;
    }
    return undefined;
  };

  // ---- churn: moves, close/reopen ---------------------------------------------------------
  const churn = { moves: 0, reopens: 0, limitChanges: 0, viaDrive: 0 };
  const reopening = new Set<Promise<void>>();
  const mover = setInterval(() => {
    const s = pickMovable();
    if (!s || groups < 2) return;
    let g = Math.floor(rand() * (groups - 1));
    if (g >= s.group) g++;
    s.drive!.setLimits({ group: groupName(g) });
    members[s.group]--;
    members[g]++;
    s.group = g;
    churn.moves++;
  }, 100);
  const closer = setInterval(() => {
    const s = pickMovable();
    if (!s) return;
    const drive = s.drive!;
    s.closing = true;
    members[s.group]--;
    const p = (async () => {
      await drive.close();
      await Promise.all(s.workers);
      s.drive = null;
      if (!stopping) await open(s, Math.floor(rand() * groups));
      churn.reopens++;
    })();
    reopening.add(p);
    void p.finally(() => reopening.delete(p));
  }, 250);

  // ---- memory and event loop --------------------------------------------------------------
  const lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  const samples: { t: number; rss: number; heap: number }[] = [];
  const afterGc: { t: number; rss: number; heap: number }[] = [];
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    samples.push({ t: (performance.now() - t0) / 1000, rss: m.rss, heap: m.heapUsed });
  }, 5000);
  /**
   * A sample after a full gc: at the end of the first phase (before the event-loop monitor
   * starts) and at the end of the last (after it stopped), so the forced pauses are not counted.
   */
  const gcSample = () => {
    if (!gc) return;
    gc();
    const m = process.memoryUsage();
    afterGc.push({ t: (performance.now() - t0) / 1000, rss: m.rss, heap: m.heapUsed });
  };

  // ---- phases -----------------------------------------------------------------------------
  const snapshot = () => ({ t: performance.now(), c: counters.map((a) => a.slice()) });
  const rows: { phase: number; checked: number; low: number; high: number; fails: string[] }[] = [];
  for (let phase = 0; phase < phases; phase++) {
    if (phase > 0) {
      for (let g = 0; g < groups; g++) {
        const kind = KINDS[Math.floor(rand() * KINDS.length)];
        const l = kind.make(rand);
        limits[g] = { kind, limits: l };
        // Half through the group object (qom-set), half through a member (block_set_io_throttle).
        const member = slots.find((s) => s.group === g && s.drive !== null && !s.closing);
        if (member && rand() < 0.5) {
          member.drive!.setLimits({ ...l, group: groupName(g) });
          churn.viaDrive++;
        } else layer.throttleGroup(groupName(g))!.setLimits(l);
        churn.limitChanges++;
      }
    }
    await sleep((o.phaseSeconds - windowS) * 1000);
    const a = snapshot();
    await sleep(windowS * 1000);
    const b = snapshot();
    const seconds = (b.t - a.t) / 1000;
    const row = { phase: phase + 1, checked: 0, low: Number.POSITIVE_INFINITY, high: 0, fails: [] as string[] };
    for (let g = 0; g < groups; g++) {
      const { kind, limits: l } = limits[g];
      let best = 0;
      const ratios: string[] = [];
      let bad = false;
      for (const [bucket, value] of Object.entries(l)) {
        const got = achieved(bucket, a.c, b.c, g, seconds);
        if (got === undefined || value === undefined) continue;
        const ratio = got / value;
        row.checked++;
        ratios.push(`${bucket} ${ratio.toFixed(3)}`);
        best = Math.max(best, ratio);
        row.high = Math.max(row.high, ratio);
        if (kind.allBind) row.low = Math.min(row.low, ratio);
        if (ratio > 1 + o.tolerance || (kind.allBind && ratio < 1 - o.tolerance)) bad = true;
      }
      if (!kind.allBind) {
        row.low = Math.min(row.low, best);
        if (best < 1 - o.tolerance) bad = true;
      }
      if (bad) row.fails.push(`${groupName(g)} (${kind.name}, ${members[g]} drives): ${ratios.join(', ')}`);
    }
    rows.push(row);
    if (phase === 0) {
      gcSample();
      lag.enable(); // from the end of the first phase: opening 300 drives is not the soak
    }
  }

  // ---- stop, close, account ---------------------------------------------------------------
  const elapsedS = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuShare = (cpu.user + cpu.system) / 1e6 / elapsedS;
  const load = os.loadavg()[0];
  lag.disable();
  gcSample();
  clearInterval(mover);
  clearInterval(closer);
  clearInterval(sampler);
  stopping = true;
  const issuedAtStop = n.issued;
  await Promise.all([...reopening]);
  const tClose = performance.now();
  const closed = layer.close();
  let watchdog: NodeJS.Timeout | undefined;
  const hung = await Promise.race([closed.then(() => false), new Promise<boolean>((r) => (watchdog = setTimeout(() => r(true), 30_000)))]);
  clearTimeout(watchdog);
  if (!hung) await Promise.all(slots.flatMap((s) => s.workers));
  const closeS = (performance.now() - tClose) / 1000;

  // ---- checks -----------------------------------------------------------------------------
  const failures: string[] = [];
  const check = (ok: boolean, what: string) => {
    if (!ok) failures.push(what);
  };
  const settledCount = n.resolved + n.canceled + n.otherErrors;
  check(!hung, 'layer.close() did not finish within 30 s');
  check(n.issued === settledCount, `issued ${n.issued} ≠ settled ${settledCount}`);
  check(inflight.size === 0, `${inflight.size} requests never settled`);
  check(n.doubleSettled === 0, `${n.doubleSettled} requests settled twice`);
  check(n.notOnce === 0, `${n.notOnce} resolved requests did not reach the driver exactly once`);
  check(n.canceledTouched === 0, `${n.canceledTouched} canceled requests had reached the driver`);
  check(n.unknownCalls === 0, `${n.unknownCalls} driver calls for requests not in flight`);
  check(n.otherErrors === 0, `unexpected errors: ${[...otherCodes].map(([c, k]) => `${c} ×${k}`).join(', ')}`);
  for (const r of rows) for (const f of r.fails) failures.push(`phase ${r.phase}: ${f} (tolerance ${o.tolerance})`);
  // The monitor records the interval between its timer's runs: the delay is what exceeds the resolution.
  const delay = (ns: number) => Math.max(0, ns / 1e6 - LAG_RESOLUTION_MS);
  const lagP50 = delay(lag.percentile(50));
  const lagP99 = delay(lag.percentile(99));
  const lagMax = delay(lag.max);
  check(lagP99 <= o.lagP99Ms, `event-loop delay p99 ${lagP99.toFixed(1)} ms > ${o.lagP99Ms} ms`);
  check(lagMax <= o.lagMaxMs, `event-loop delay max ${lagMax.toFixed(1)} ms > ${o.lagMaxMs} ms`);
  const first = afterGc[0];
  const last = afterGc[afterGc.length - 1];
  const heapGrowth = first && last ? last.heap - first.heap : 0;
  const rssGrowth = first && last ? last.rss - first.rss : 0;
  const heapBound = first ? Math.max(o.heapGrowthBytes, 0.1 * first.heap) : 0;
  if (gc && afterGc.length >= 2) {
    check(heapGrowth <= heapBound, `heap grew ${mib(heapGrowth)} after gc (bound ${mib(heapBound)})`);
    check(rssGrowth <= o.rssGrowthBytes, `RSS grew ${mib(rssGrowth)} after gc (bound ${mib(o.rssGrowthBytes)})`);
  }
  gc?.();
  const end = process.memoryUsage();

  // ---- report -----------------------------------------------------------------------------
  console.log(`Soak: ${o.drives} drives (null 1G / memory 256K behind a probe filter) in ${groups} groups, depth ${o.depth}, ${phases} phases of ${o.phaseSeconds} s, real clock`);
  console.log(`  requests   issued ${n.issued} (${(issuedAtStop / elapsedS).toFixed(0)}/s)  resolved ${n.resolved}  canceled ${n.canceled}  other errors ${n.otherErrors}  with a signal ${n.aborts}`);
  console.log(`  settlement in flight after close ${inflight.size}  settled twice ${n.doubleSettled}  resolved but not one driver call ${n.notOnce}  canceled but reached the driver ${n.canceledTouched}  unknown driver calls ${n.unknownCalls}${n.untagged ? `  untagged driver calls ${n.untagged}` : ''}`);
  console.log(`  machine    ${os.cpus().length} CPUs, load average ${load.toFixed(1)}; this process used ${(cpuShare * 100).toFixed(0)} % of one CPU`);
  console.log(`  timing     opening ${o.drives} drives ${openS.toFixed(2)} s, soak ${elapsedS.toFixed(0)} s, closing the layer ${closeS.toFixed(2)} s`);
  console.log(`  churn      limit changes ${churn.limitChanges} (${churn.viaDrive} via a drive)  moves ${churn.moves}  close+reopen ${churn.reopens}`);
  console.log(`  rates      last ${windowS} s of each phase, achieved/limit per limited bucket (tolerance ±${(o.tolerance * 100).toFixed(0)} %):`);
  console.log(`    ${'phase'.padEnd(6)} ${'buckets'.padStart(7)} ${'lowest'.padStart(7)} ${'highest'.padStart(7)} ${'fails'.padStart(5)}`);
  for (const r of rows) console.log(`    ${String(r.phase).padEnd(6)} ${String(r.checked).padStart(7)} ${r.low.toFixed(3).padStart(7)} ${r.high.toFixed(3).padStart(7)} ${String(r.fails.length).padStart(5)}`);
  if (gc && first && last) {
    console.log(`  memory     after gc: heap ${mib(first.heap)} at ${first.t.toFixed(0)} s → ${mib(last.heap)} at ${last.t.toFixed(0)} s (${heapGrowth >= 0 ? '+' : ''}${mib(heapGrowth)}), RSS ${mib(first.rss)} → ${mib(last.rss)} (${rssGrowth >= 0 ? '+' : ''}${mib(rssGrowth)})`);
    console.log(`             every 5 s: heap ${mib(Math.min(...samples.map((s) => s.heap)))}–${mib(Math.max(...samples.map((s) => s.heap)))}, RSS ${mib(Math.min(...samples.map((s) => s.rss)))}–${mib(Math.max(...samples.map((s) => s.rss)))}; all closed: heap ${mib(end.heapUsed)}, RSS ${mib(end.rss)}`);
  } else console.log('  memory     not checked (run node with --expose-gc)');
  console.log(`  event loop delay p50 ${lagP50.toFixed(1)} ms  p99 ${lagP99.toFixed(1)} ms  max ${lagMax.toFixed(1)} ms (bounds p99 ${o.lagP99Ms}, max ${o.lagMaxMs})`);
  for (const f of failures) console.log(`  FAIL ${f}`);
  console.log(failures.length === 0 ? '  all checks passed' : `  ${failures.length} check(s) failed`);

  return {
    ok: failures.length === 0,
    options: o,
    groups,
    elapsedS,
    requests: { ...n, otherCodes: Object.fromEntries(otherCodes) },
    churn,
    cpuShare,
    loadAverage: load,
    phases: rows,
    memory: { afterGc, samples, end: { rss: end.rss, heap: end.heapUsed } },
    lagMs: { p50: lagP50, p99: lagP99, max: lagMax },
    failures,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string' },
      drives: { type: 'string' },
      groups: { type: 'string' },
      depth: { type: 'string' },
      'phase-seconds': { type: 'string' },
      tolerance: { type: 'string' },
      seed: { type: 'string' },
    },
    strict: true,
  });
  const num = (flag: string, v: string | undefined, min: number): number | undefined => {
    if (v === undefined) return undefined;
    const x = Number(v);
    if (!Number.isFinite(x) || x < min) {
      console.error(`soak: --${flag}: '${v}' must be a number ≥ ${min}`);
      process.exit(2);
    }
    return x;
  };
  const options: Partial<SoakOptions> = {};
  const set = <K extends keyof SoakOptions>(k: K, v: SoakOptions[K] | undefined) => {
    if (v !== undefined) options[k] = v;
  };
  set('minutes', num('minutes', values.minutes, 0.1));
  set('drives', num('drives', values.drives, 1));
  set('groups', num('groups', values.groups, 1));
  set('depth', num('depth', values.depth, 2));
  // At least 8: the window (half the phase, at most 10 s) must start after a burst kind's 3 s burst.
  set('phaseSeconds', num('phase-seconds', values['phase-seconds'], 8));
  set('tolerance', num('tolerance', values.tolerance, 0));
  set('seed', num('seed', values.seed, 0));
  const result = await soakBench(options);
  process.exitCode = result.ok ? 0 : 1;
}
