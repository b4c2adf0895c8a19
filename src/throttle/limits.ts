import * as z from 'zod';
import { BlockError } from '../errors.js';

/** Bucket order (QEMU's BucketType): bps total/read/write, then iops total/read/write. */
export const BUCKET_NAMES = ['bpsTotal', 'bpsRead', 'bpsWrite', 'iopsTotal', 'iopsRead', 'iopsWrite'] as const;
/** Name of one of the six buckets, e.g. `bpsRead`. */
export type BucketName = (typeof BUCKET_NAMES)[number];

/** Largest accepted avg, max and max × maxLength (QEMU's THROTTLE_VALUE_MAX). */
export const THROTTLE_VALUE_MAX = 1e15;
/** Largest accepted burst length in seconds (UINT_MAX, as QEMU's option parsers). */
export const MAX_BURST_LENGTH = 4_294_967_295;

/**
 * A limit: any whole number. Not zod's `.int()`, which also refuses integers beyond 2^53 as
 * "not whole": those are left to QEMU's range rules below, which name the real problem
 * (`bps/iops/max values must be within [0, 1e15]`), as the QMP parser does.
 */
const value = z.number({ error: 'must be a number' }).refine(Number.isInteger, 'must be a whole number');
/** Every limit field: one instance for all of them (a zod schema is immutable, and each built one costs at start-up). */
const optionalValue = value.optional();

/**
 * I/O limits, QEMU's ThrottleLimits in camelCase. All optional: a missing avg or max is 0
 * (off), a missing `*MaxLength` is 1 second. `*Max` is a burst rate (units/s), not a size.
 */
export const throttleLimitsSchema = z
  .object({
    /** Sustained limit on bytes read and written, in bytes/s (QEMU `throttling.bps-total`); 0 = off. */
    bpsTotal: optionalValue,
    /** Burst rate for `bpsTotal`, in bytes/s (QEMU `throttling.bps-total-max`); 0 = no burst. */
    bpsTotalMax: optionalValue,
    /** Seconds a burst at `bpsTotalMax` may last (QEMU `throttling.bps-total-max-length`); default 1. */
    bpsTotalMaxLength: optionalValue,
    /** Sustained limit on bytes read, in bytes/s (QEMU `throttling.bps-read`); 0 = off. */
    bpsRead: optionalValue,
    /** Burst rate for `bpsRead`, in bytes/s (QEMU `throttling.bps-read-max`); 0 = no burst. */
    bpsReadMax: optionalValue,
    /** Seconds a burst at `bpsReadMax` may last (QEMU `throttling.bps-read-max-length`); default 1. */
    bpsReadMaxLength: optionalValue,
    /** Sustained limit on bytes written, in bytes/s (QEMU `throttling.bps-write`); 0 = off. */
    bpsWrite: optionalValue,
    /** Burst rate for `bpsWrite`, in bytes/s (QEMU `throttling.bps-write-max`); 0 = no burst. */
    bpsWriteMax: optionalValue,
    /** Seconds a burst at `bpsWriteMax` may last (QEMU `throttling.bps-write-max-length`); default 1. */
    bpsWriteMaxLength: optionalValue,
    /** Sustained limit on requests read and written, in ops/s (QEMU `throttling.iops-total`); 0 = off. */
    iopsTotal: optionalValue,
    /** Burst rate for `iopsTotal`, in ops/s (QEMU `throttling.iops-total-max`); 0 = no burst. */
    iopsTotalMax: optionalValue,
    /** Seconds a burst at `iopsTotalMax` may last (QEMU `throttling.iops-total-max-length`); default 1. */
    iopsTotalMaxLength: optionalValue,
    /** Sustained limit on requests read, in ops/s (QEMU `throttling.iops-read`); 0 = off. */
    iopsRead: optionalValue,
    /** Burst rate for `iopsRead`, in ops/s (QEMU `throttling.iops-read-max`); 0 = no burst. */
    iopsReadMax: optionalValue,
    /** Seconds a burst at `iopsReadMax` may last (QEMU `throttling.iops-read-max-length`); default 1. */
    iopsReadMaxLength: optionalValue,
    /** Sustained limit on requests written, in ops/s (QEMU `throttling.iops-write`); 0 = off. */
    iopsWrite: optionalValue,
    /** Burst rate for `iopsWrite`, in ops/s (QEMU `throttling.iops-write-max`); 0 = no burst. */
    iopsWriteMax: optionalValue,
    /** Seconds a burst at `iopsWriteMax` may last (QEMU `throttling.iops-write-max-length`); default 1. */
    iopsWriteMaxLength: optionalValue,
    /** Requests larger than this many bytes count as size/iopsSize operations (QEMU iops_size). */
    iopsSize: optionalValue,
  })
  .strict();

/** I/O limits of a drive or group (see {@link throttleLimitsSchema}). */
export type ThrottleLimits = z.infer<typeof throttleLimitsSchema>;

/** Limits plus the group they apply to, as given to `openDrive({ throttle })` and `drive.setLimits()`. */
export const throttleOptionsSchema = throttleLimitsSchema
  .extend({
    /** Name of the throttle group; default: the drive's id (a group of one, as in QEMU). */
    group: z.string().min(1, 'must not be empty').optional(),
  })
  .strict();
/** Limits plus the throttle group they apply to (see {@link throttleOptionsSchema}). */
export type ThrottleOptions = z.infer<typeof throttleOptionsSchema>;

/** One bucket's configuration. */
export interface BucketConfig {
  /** Sustained rate (units/s); 0 = bucket off. */
  avg: number;
  /** Burst rate (units/s); 0 = no burst. */
  max: number;
  /** Seconds a burst at `max` may last (≥ 1). */
  burstLength: number;
}

/** Validated configuration: six buckets in BUCKET_NAMES order, and the op size. */
export interface ThrottleConfig {
  /** The six buckets, in {@link BUCKET_NAMES} order. */
  readonly buckets: readonly BucketConfig[];
  /** Bytes one operation counts for in iops buckets, 0 = every request is one (QEMU op_size). */
  readonly opSize: number;
}

/** A bucket that is off; shared by every configuration (configurations are never changed in place). */
const OFF_BUCKET: BucketConfig = Object.freeze({ avg: 0, max: 0, burstLength: 1 });
const EMPTY_CONFIG: ThrottleConfig = Object.freeze({ buckets: Object.freeze(BUCKET_NAMES.map(() => OFF_BUCKET)), opSize: 0 });

/** Configuration with every bucket off. */
export function emptyConfig(): ThrottleConfig {
  return EMPTY_CONFIG;
}

/** True if some bucket has a rate (QEMU throttle_enabled). */
export function isEnabled(config: ThrottleConfig): boolean {
  return config.buckets.some((b) => b.avg > 0);
}

function invalid(fields: string[], message: string): BlockError {
  return new BlockError('EINVAL', `${fields.join(', ')}: ${message}`, { field: fields[0] });
}

/**
 * Validates limits with QEMU's rules, in QEMU's order (so a config with several problems
 * reports the same one QEMU would), and returns the bucket configuration. Unlike QEMU,
 * a negative iopsSize is refused rather than read as "every request is one op".
 */
export function validateLimits(limits: ThrottleLimits, prefix = '', options: { maxBurstLength?: number } = {}): ThrottleConfig {
  const maxBurstLength = options.maxBurstLength ?? MAX_BURST_LENGTH;
  const parsed = throttleLimitsSchema.safeParse(limits);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = `${prefix}${issue.path.join('.')}`;
    if (issue.code === 'unrecognized_keys') {
      const keys = (issue as { keys?: string[] }).keys ?? [];
      throw invalid(keys.map((k) => prefix + k), 'unknown limit');
    }
    throw invalid([field], issue.message);
  }
  const l = parsed.data;
  const name = (n: string) => prefix + n;
  const buckets: BucketConfig[] = BUCKET_NAMES.map((n) => ({
    avg: l[n] ?? 0,
    max: l[`${n}Max`] ?? 0,
    burstLength: l[`${n}MaxLength`] ?? 1,
  }));
  const opSize = l.iopsSize ?? 0;

  // Length fields first: QEMU's option parsers refuse them before the config is built
  // (QMP's block_set_io_throttle does not: it passes maxBurstLength = Infinity).
  for (const n of BUCKET_NAMES) {
    const len = l[`${n}MaxLength`];
    if (len !== undefined && (len < 0 || len > maxBurstLength)) {
      throw invalid([name(`${n}MaxLength`)], `value must be in the range [0, ${MAX_BURST_LENGTH}]`);
    }
  }
  if (opSize < 0) throw invalid([name('iopsSize')], 'must not be negative');
  if (opSize > Number.MAX_SAFE_INTEGER) throw invalid([name('iopsSize')], 'must be at most 2^53-1');

  // Rule 1: total and read/write of the same kind are exclusive (avg and max).
  for (const [kind, base] of [
    ['bps', 0],
    ['iops', 3],
  ] as const) {
    for (const field of ['avg', 'max'] as const) {
      const total = buckets[base][field];
      const rw = [buckets[base + 1][field], buckets[base + 2][field]];
      if (total !== 0 && (rw[0] !== 0 || rw[1] !== 0)) {
        const suffix = field === 'max' ? 'Max' : '';
        const names = [`${kind}Total${suffix}`];
        if (rw[0] !== 0) names.push(`${kind}Read${suffix}`);
        if (rw[1] !== 0) names.push(`${kind}Write${suffix}`);
        throw invalid(names.map(name), 'bps/iops/max total values and read/write values cannot be used at the same time');
      }
    }
  }
  // Rule 2: iopsSize needs an iops rate.
  if (opSize !== 0 && buckets[3].avg === 0 && buckets[4].avg === 0 && buckets[5].avg === 0) {
    throw invalid([name('iopsSize')], 'iops size requires an iops value to be set');
  }
  // Rules 3–8, bucket by bucket.
  BUCKET_NAMES.forEach((n, i) => {
    const b = buckets[i];
    if (b.avg < 0 || b.avg > THROTTLE_VALUE_MAX || b.max < 0 || b.max > THROTTLE_VALUE_MAX) {
      const bad = b.avg < 0 || b.avg > THROTTLE_VALUE_MAX ? n : `${n}Max`;
      throw invalid([name(bad)], `bps/iops/max values must be within [0, ${THROTTLE_VALUE_MAX}]`);
    }
    if (b.burstLength === 0) throw invalid([name(`${n}MaxLength`)], 'the burst length cannot be 0');
    if (b.burstLength > 1 && b.max === 0) {
      throw invalid([name(`${n}MaxLength`), name(`${n}Max`)], 'burst length set without burst rate');
    }
    if (b.max !== 0 && b.burstLength > Math.floor(THROTTLE_VALUE_MAX / b.max)) {
      throw invalid([name(`${n}MaxLength`), name(`${n}Max`)], 'burst length too high for this burst rate');
    }
    if (b.max !== 0 && b.avg === 0) {
      throw invalid([name(`${n}Max`), name(n)], 'bps_max/iops_max require corresponding bps/iops values');
    }
    if (b.max !== 0 && b.max < b.avg) {
      throw invalid([name(`${n}Max`), name(n)], 'bps_max/iops_max cannot be lower than bps/iops');
    }
  });
  // Buckets that are off share one object: a drive limited on one bucket keeps one bucket object, not six.
  return { buckets: buckets.map((b) => (b.avg === 0 && b.max === 0 && b.burstLength === 1 ? OFF_BUCKET : b)), opSize };
}

/** The limits a configuration stands for, with only the fields that are set (0 avg/max and length 1 omitted). */
export function fromConfig(config: ThrottleConfig): ThrottleLimits {
  const out: ThrottleLimits = {};
  BUCKET_NAMES.forEach((n, i) => {
    const b = config.buckets[i];
    if (b.avg) out[n] = b.avg;
    if (b.max) out[`${n}Max`] = b.max;
    if (b.max && b.burstLength !== 1) out[`${n}MaxLength`] = b.burstLength;
  });
  if (config.opSize) out.iopsSize = config.opSize;
  return out;
}
