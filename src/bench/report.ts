import * as z from 'zod';

/** Latency figures in nanoseconds; percentiles from the log-linear histogram (within 1.6 %), the rest exact. */
const latency = z.object({
  /** Requests measured. */
  count: z.number(),
  /** Shortest latency. */
  min: z.number(),
  /** Mean latency. */
  mean: z.number(),
  /** Median. */
  p50: z.number(),
  /** 90th percentile. */
  p90: z.number(),
  /** 99th percentile. */
  p99: z.number(),
  /** 99.9th percentile. */
  p999: z.number(),
  /** Longest latency. */
  max: z.number(),
});

const figures = z.object({
  /** Completed requests. */
  ops: z.number(),
  /** Completed reads. */
  readOps: z.number(),
  /** Completed writes. */
  writeOps: z.number(),
  /** Bytes transferred. */
  bytes: z.number(),
  /** Requests per second over the run. */
  iops: z.number(),
  /** Bytes per second over the run. */
  bandwidth: z.number(),
  /** Completion latency in nanoseconds (submission to completion, throttle wait included). */
  latencyNs: latency,
});

/**
 * The result of a benchmark job (version 1). Stable: fields are only ever added. The table
 * and the SVG plot are made from this object. Documented in docs/bench-json.md.
 */
export const benchResultSchema = z.object({
  /** Format version; changes only if a field ever has to change meaning. */
  version: z.literal(1),
  /** The job as run, after defaults (target, rw, bs, iodepth, limits, …). */
  job: z.record(z.string(), z.unknown()),
  /** Which clock timed the run. */
  clock: z.enum(['real', 'virtual']),
  /** Seconds the job ran (virtual seconds on a virtual clock). */
  durationS: z.number(),
  /** The limits in force and how they were shared. */
  limits: z.record(z.string(), z.number()),
  /** The group the drives shared, or null (each drive had its own limits). */
  group: z.string().nullable(),
  /** All drives together. */
  total: figures,
  /** Each drive's figures. */
  drives: z.array(
    figures.extend({
      /** The drive's id. */
      id: z.string(),
      /** How long throttling held the drive's requests, or null when it had no limits. */
      throttle: z
        .object({
          /** Requests that had to wait. */
          delayedRequests: z.number(),
          /** Sum of their waits (ns). */
          totalDelayNs: z.number(),
          /** Longest single wait (ns). */
          maxDelayNs: z.number(),
        })
        .nullable(),
    }),
  ),
  /** Achieved rate per slice. */
  series: z.object({
    /** Width of a slice in milliseconds; slice i covers [i, i+1) × sliceMs. */
    sliceMs: z.number(),
    /** Each drive's rates, one number per slice. */
    drives: z.array(
      z.object({
        /** The drive's id. */
        id: z.string(),
        /** Requests per second in each slice. */
        iops: z.array(z.number()),
        /** Bytes per second in each slice. */
        bandwidth: z.array(z.number()),
      }),
    ),
  }),
  /** Latency histogram of all drives: [low ns, high ns, count]. */
  histogram: z.array(z.tuple([z.number(), z.number(), z.number()])),
});

/** The result of a benchmark job: see {@link benchResultSchema} and docs/bench-json.md. */
export type BenchResult = z.infer<typeof benchResultSchema>;
/** Figures of one drive or of all together: counts, rates, latency. */
export type BenchFigures = z.infer<typeof figures>;
