import { z } from 'zod';

const latency = z.object({
  count: z.number(),
  min: z.number(),
  mean: z.number(),
  p50: z.number(),
  p90: z.number(),
  p99: z.number(),
  p999: z.number(),
  max: z.number(),
});

const figures = z.object({
  /** Completed requests. */
  ops: z.number(),
  readOps: z.number(),
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
  version: z.literal(1),
  job: z.record(z.string(), z.unknown()),
  clock: z.enum(['real', 'virtual']),
  /** Seconds the job ran (virtual seconds on a virtual clock). */
  durationS: z.number(),
  /** The limits in force and how they were shared. */
  limits: z.record(z.string(), z.number()),
  group: z.string().nullable(),
  total: figures,
  drives: z.array(
    figures.extend({
      id: z.string(),
      throttle: z
        .object({ delayedRequests: z.number(), totalDelayNs: z.number(), maxDelayNs: z.number() })
        .nullable(),
    }),
  ),
  /** Achieved rate per slice. */
  series: z.object({
    sliceMs: z.number(),
    drives: z.array(z.object({ id: z.string(), iops: z.array(z.number()), bandwidth: z.array(z.number()) })),
  }),
  /** Latency histogram of all drives: [low ns, high ns, count]. */
  histogram: z.array(z.tuple([z.number(), z.number(), z.number()])),
});

export type BenchResult = z.infer<typeof benchResultSchema>;
export type BenchFigures = z.infer<typeof figures>;
