import * as z from 'zod';
import { sizeSchema } from '../options/size.js';
import { throttleLimitsSchema } from '../throttle/limits.js';

/** QEMU's largest request (BDRV_REQUEST_MAX_BYTES: INT_MAX rounded down to a sector). */
const MAX_REQUEST = 2 ** 31 - 512;
/** Node's setTimeout holds at most 2^31-1 ms. */
const MAX_RUNTIME_S = Math.floor((2 ** 31 - 1) / 1000);
/** Most time-series slices a job may have (each drive keeps two numbers per slice). */
const MAX_SLICES = 1_000_000;

/** A benchmark job, fio style. Sizes accept QEMU suffixes ('4k', '1G'). */
export const jobSchema = z
  .object({
    /** Drive options of the target (any driver); default: a 1 GiB null drive. */
    target: z.record(z.string(), z.unknown()).default({ driver: 'null', size: '1G' }),
    /** Access pattern (fio --rw). */
    rw: z.enum(['read', 'write', 'randread', 'randwrite', 'randrw', 'rw']).default('randread'),
    /** Percentage of reads in rw/randrw (fio --rwmixread). */
    rwmixread: z.number().int().min(0).max(100).default(50),
    /** Block size in bytes (fio --bs), at most QEMU's largest request (2 GiB - 512). */
    bs: sizeSchema().pipe(z.number().min(1, 'must be at least 1 byte').max(MAX_REQUEST, `must be at most ${MAX_REQUEST} bytes (QEMU's largest request)`)).default(4096),
    /** Requests in flight per drive (fio --iodepth). */
    iodepth: z.number().int().min(1).max(65536).default(1),
    /** Bytes to transfer per drive (at least bs); the job ends when every drive has done them. */
    size: sizeSchema().pipe(z.number().min(1, 'must be at least 1 byte')).optional(),
    /** Seconds to run (fio --runtime), at most Node's longest timer. Default 5 when no size is given. */
    runtime: z.number().positive().max(MAX_RUNTIME_S, `must be at most ${MAX_RUNTIME_S} seconds (Node's longest timer)`).optional(),
    /** Number of drives, all opened on the target. */
    drives: z.number().int().min(1).max(100_000).default(1),
    /** Put every drive in this throttle group (shared limits); otherwise each drive has its own. */
    group: z.string().min(1).optional(),
    /** I/O limits (QEMU ThrottleLimits, camelCase). */
    limits: throttleLimitsSchema.default({}),
    /** 'virtual' runs instantly and deterministically on a VirtualClock. */
    clock: z.enum(['real', 'virtual']).default('real'),
    /** Width of a time-series slice in milliseconds (at least 1, as fio's log_avg_msec). */
    sliceMs: z.number().min(1, 'must be at least 1 ms').default(100),
    /** Seed of the offset and mix generator. */
    seed: z.number().int().default(1),
  })
  .strict()
  .superRefine((job, ctx) => {
    if (job.size !== undefined && job.size < job.bs) {
      ctx.addIssue({ code: 'custom', path: ['size'], message: `${job.size} bytes is less than one block (bs ${job.bs})` });
    }
    const runtime = job.runtime ?? (job.size === undefined ? 5 : undefined);
    if (runtime !== undefined && (runtime * 1000) / job.sliceMs > MAX_SLICES) {
      ctx.addIssue({ code: 'custom', path: ['sliceMs'], message: `${job.sliceMs} ms slices over ${runtime} s make more than ${MAX_SLICES} slices` });
    }
  });

/** A benchmark job with its defaults filled in (what {@link jobSchema} outputs). */
export type BenchJob = z.output<typeof jobSchema>;
/** A benchmark job as given to runJob: every field optional, sizes as numbers or '4k'-style strings. */
export type BenchJobInput = z.input<typeof jobSchema>;
