import { type Clock, RealClock, VirtualClock } from '../clock.js';
import type { Drive } from '../drive.js';
import { BlockError, fromErrno, isBlockError } from '../errors.js';
import { BlockLayer, type DriveOptions } from '../layer.js';
import { parseOptions } from '../options/zod-error.js';
import { isEnabled, validateLimits } from '../throttle/limits.js';
import { LatencyHistogram } from './histogram.js';
import { prng } from './prng.js';
import { type BenchJobInput, jobSchema } from './job.js';
import type { BenchFigures, BenchResult } from './report.js';

/** Progress callback: fraction done (0–1). */
export type Progress = (fraction: number) => void;


interface DriveRun {
  drive: Drive;
  hist: LatencyHistogram;
  readOps: number;
  writeOps: number;
  bytes: number;
  sliceOps: number[];
  sliceBytes: number[];
  cursor: number;
  done: number; // bytes issued, for size-bound jobs
  throttle: BenchResult['drives'][number]['throttle'];
}

/** Sets locking off on every file node of a tree (several drives of one job share the file). */
function unlockFiles(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...o };
  if (out.driver === 'file' && out.locking === undefined) out.locking = 'off';
  for (const [k, v] of Object.entries(out)) if (v && typeof v === 'object' && !Array.isArray(v) && 'driver' in v) out[k] = unlockFiles(v as Record<string, unknown>);
  return out;
}

/** Runs a job and returns its result (see benchResultSchema). */
export async function runJob(input: BenchJobInput, onProgress?: Progress): Promise<BenchResult> {
  const job = parseOptions(jobSchema, input);
  const runtime = job.runtime ?? (job.size === undefined ? 5 : undefined);
  const virtual = job.clock === 'virtual';
  // Validate limits up front (QEMU's rules), so a bad limit fails even if it would switch throttling off.
  const hasLimits = isEnabled(validateLimits(job.limits, 'limits.'));
  const latency = Number((job.target as { latencyNs?: number }).latencyNs ?? 0);
  if (virtual && runtime !== undefined && !hasLimits && latency === 0) {
    throw new BlockError('EINVAL', 'clock: a virtual-clock job with a runtime needs a limit or a target latency (latencyNs), or time never moves', { field: 'clock' });
  }
  const clock: Clock = virtual ? new VirtualClock() : new RealClock();
  const layer = new BlockLayer({ clock });
  const writes = job.rw !== 'read' && job.rw !== 'randread';
  const target = job.drives > 1 ? unlockFiles(job.target) : job.target;
  const runs: DriveRun[] = [];
  try {
    for (let i = 0; i < job.drives; i++) {
      const options = { ...target, id: `job${i}` } as DriveOptions;
      if (!writes && options.readOnly === undefined && options.driver !== 'null' && options.driver !== 'memory') options.readOnly = true;
      if (hasLimits) options.throttle = { ...job.limits, ...(job.group ? { group: job.group } : {}) };
      const drive = await layer.openDrive(options);
      if (drive.length < job.bs) throw new BlockError('EINVAL', `bs: ${job.bs} is larger than the target (${drive.length} bytes)`, { field: 'bs' });
      runs.push({ drive, hist: new LatencyHistogram(), readOps: 0, writeOps: 0, bytes: 0, sliceOps: [], sliceBytes: [], cursor: 0, done: 0, throttle: null });
    }
    const sliceNs = job.sliceMs * 1e6;
    const start = clock.now();
    const endNs = runtime === undefined ? Number.POSITIVE_INFINITY : start + runtime * 1e9;
    const random = prng(job.seed);
    const sequential = job.rw === 'read' || job.rw === 'write' || job.rw === 'rw';
    let stop = false;
    let lastCompletion = start;
    const chooseWrite = () => (job.rw === 'write' || job.rw === 'randwrite' ? true : job.rw === 'read' || job.rw === 'randread' ? false : random() * 100 >= job.rwmixread);

    // The first I/O error ends the job: no new request is issued, the ones in flight settle,
    // and runJob rejects with that error once the layer is closed. Later errors are its echoes.
    let failure: BlockError | undefined;
    let wakeOnFailure: () => void = () => {};
    const failed = new Promise<void>((resolve) => (wakeOnFailure = resolve));
    const fail = (e: unknown) => {
      if (failure !== undefined) return;
      // Requests canceled by our own close once the job stopped are not the job's errors.
      if (stop && (isBlockError(e, 'ECANCELED') || isBlockError(e, 'ECLOSED'))) return;
      failure = fromErrno(e, 'bench');
      stop = true;
      wakeOnFailure();
    };

    const worker = async (r: DriveRun) => {
      const buf = new Uint8Array(job.bs);
      const blocks = Math.floor(r.drive.length / job.bs);
      while (!stop) {
        if (job.size !== undefined && r.done >= job.size) return;
        r.done += job.bs;
        let offset: number;
        if (sequential) {
          offset = r.cursor;
          r.cursor = r.cursor + job.bs + job.bs > r.drive.length ? 0 : r.cursor + job.bs;
        } else offset = Math.floor(random() * blocks) * job.bs;
        const write = chooseWrite();
        const t0 = clock.now();
        if (write) await r.drive.write(offset, buf);
        else await r.drive.read(offset, buf);
        const t1 = clock.now();
        // The window is [start, end): completions at or after the end (and requests drained
        // when the job stops) are not counted.
        if (stop || t1 >= endNs) return;
        r.hist.record(t1 - t0);
        if (write) r.writeOps++;
        else r.readOps++;
        r.bytes += job.bs;
        const slice = Math.floor((t1 - start) / sliceNs);
        while (r.sliceOps.length <= slice) {
          r.sliceOps.push(0);
          r.sliceBytes.push(0);
        }
        r.sliceOps[slice]++;
        r.sliceBytes[slice] += job.bs;
        if (t1 > lastCompletion) lastCompletion = t1;
      }
    };
    const captureThrottle = () => {
      for (const r of runs) {
        const t = r.drive.stats().throttle;
        r.throttle = t ? { delayedRequests: t.delayedRequests, totalDelayNs: t.totalDelayNs, maxDelayNs: t.maxDelayNs } : null;
      }
    };
    // Never rejects: a worker's error goes to fail(), so nothing is left unhandled while we wait.
    let finished = false;
    const all = Promise.all(runs.flatMap((r) => Array.from({ length: job.iodepth }, () => worker(r).catch(fail)))).then(() => {
      finished = true;
    });

    if (virtual) {
      const c = clock as VirtualClock;
      if (runtime === undefined) {
        while (!finished && failure === undefined) {
          if (c.pendingTimers === 0) await new Promise((r) => setImmediate(r));
          else await c.advanceNs(sliceNs);
        }
      } else {
        for (let t = start + sliceNs; t < endNs && !finished && failure === undefined; t += sliceNs) {
          await c.advanceTo(t);
          onProgress?.((t - start) / (endNs - start));
        }
        if (!finished && failure === undefined) await c.advanceTo(endNs);
      }
    } else if (runtime !== undefined) {
      const timer = setInterval(() => onProgress?.(Math.min(1, (clock.now() - start) / (endNs - start))), 200);
      let sleep: NodeJS.Timeout | undefined;
      await Promise.race([new Promise((r) => (sleep = setTimeout(r, runtime * 1000))), failed, all]);
      clearTimeout(sleep);
      clearInterval(timer);
    } else {
      const total = job.size === undefined ? 0 : job.size * job.drives;
      const timer = onProgress && total > 0 ? setInterval(() => onProgress(Math.min(1, runs.reduce((n, r) => n + r.done, 0) / total)), 200) : undefined;
      await Promise.race([all, failed]);
      clearInterval(timer);
    }
    // A job whose workers all finished (its size done) ended with its last completion.
    const endedAt = finished ? lastCompletion : clock.now();
    stop = true;
    captureThrottle();
    const closeError = await closeLayer(layer, virtual ? (clock as VirtualClock) : null, sliceNs);
    await all;
    if (failure !== undefined) throw failure;
    if (closeError !== undefined) throw fromErrno(closeError, 'close');
    onProgress?.(1);
    const durationS = (Math.min(endedAt, endNs) - start) / 1e9;
    return report(job, runtime, runs, durationS, virtual);
  } finally {
    await layer.close();
  }
}

/**
 * Closes the layer: its drives release what they hold queued and wait for what is in flight.
 * On a virtual clock, time keeps moving until then, or requests waiting on a timer (a target
 * latency) would never complete. Returns the error of the close, if any (never rejects).
 */
async function closeLayer(layer: BlockLayer, clock: VirtualClock | null, stepNs: number): Promise<unknown> {
  let closed = false;
  let error: unknown;
  const closing = layer.close().then(
    () => {
      closed = true;
    },
    (e: unknown) => {
      closed = true;
      error = e;
    },
  );
  if (clock !== null) {
    await new Promise((r) => setImmediate(r));
    while (!closed) {
      if (clock.pendingTimers === 0) await new Promise((r) => setImmediate(r));
      else await clock.advanceNs(stepNs);
    }
  }
  await closing;
  return error;
}

function figures(ops: [number, number], bytes: number, hist: LatencyHistogram, seconds: number): BenchFigures {
  const total = ops[0] + ops[1];
  return {
    ops: total,
    readOps: ops[0],
    writeOps: ops[1],
    bytes,
    iops: seconds > 0 ? total / seconds : 0,
    bandwidth: seconds > 0 ? bytes / seconds : 0,
    latencyNs: hist.summary(),
  };
}

function report(job: ReturnType<typeof jobSchema.parse>, runtime: number | undefined, runs: DriveRun[], durationS: number, virtual: boolean): BenchResult {
  const all = new LatencyHistogram();
  for (const r of runs) all.merge(r.hist);
  const slices = Math.max(0, ...runs.map((r) => r.sliceOps.length));
  const perSecond = 1000 / job.sliceMs;
  return {
    version: 1,
    job: { ...job, runtime },
    clock: virtual ? 'virtual' : 'real',
    durationS,
    limits: Object.fromEntries(Object.entries(job.limits).filter(([, v]) => v !== undefined)) as Record<string, number>,
    group: job.group ?? null,
    total: figures(
      [runs.reduce((n, r) => n + r.readOps, 0), runs.reduce((n, r) => n + r.writeOps, 0)],
      runs.reduce((n, r) => n + r.bytes, 0),
      all,
      durationS,
    ),
    drives: runs.map((r) => ({ id: r.drive.id, ...figures([r.readOps, r.writeOps], r.bytes, r.hist, durationS), throttle: r.throttle })),
    series: {
      sliceMs: job.sliceMs,
      drives: runs.map((r) => ({
        id: r.drive.id,
        iops: Array.from({ length: slices }, (_, i) => (r.sliceOps[i] ?? 0) * perSecond),
        bandwidth: Array.from({ length: slices }, (_, i) => (r.sliceBytes[i] ?? 0) * perSecond),
      })),
    },
    histogram: all.buckets(),
  };
}
