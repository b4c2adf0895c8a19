import { z } from 'zod';
import { sizeSchema } from '../options/size.js';
import { throttleLimitsSchema } from '../throttle/limits.js';

/** A benchmark job, fio style. Sizes accept QEMU suffixes ('4k', '1G'). */
export const jobSchema = z
  .object({
    /** Drive options of the target (any driver); default: a 1 GiB null drive. */
    target: z.record(z.string(), z.unknown()).default({ driver: 'null', size: '1G' }),
    /** Access pattern (fio --rw). */
    rw: z.enum(['read', 'write', 'randread', 'randwrite', 'randrw', 'rw']).default('randread'),
    /** Percentage of reads in rw/randrw (fio --rwmixread). */
    rwmixread: z.number().int().min(0).max(100).default(50),
    /** Block size in bytes (fio --bs). */
    bs: sizeSchema.default(4096),
    /** Requests in flight per drive (fio --iodepth). */
    iodepth: z.number().int().min(1).max(65536).default(1),
    /** Bytes to transfer per drive; the job ends when every drive has done them. */
    size: sizeSchema.optional(),
    /** Seconds to run (fio --runtime). Default 5 when no size is given. */
    runtime: z.number().positive().optional(),
    /** Number of drives, all opened on the target. */
    drives: z.number().int().min(1).max(100_000).default(1),
    /** Put every drive in this throttle group (shared limits); otherwise each drive has its own. */
    group: z.string().min(1).optional(),
    /** I/O limits (QEMU ThrottleLimits, camelCase). */
    limits: throttleLimitsSchema.default({}),
    /** 'virtual' runs instantly and deterministically on a VirtualClock. */
    clock: z.enum(['real', 'virtual']).default('real'),
    /** Width of a time-series slice in milliseconds. */
    sliceMs: z.number().positive().default(100),
    /** Seed of the offset and mix generator. */
    seed: z.number().int().default(1),
  })
  .strict();

export type BenchJob = z.output<typeof jobSchema>;
export type BenchJobInput = z.input<typeof jobSchema>;
