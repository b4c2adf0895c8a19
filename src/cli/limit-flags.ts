import { BlockError } from '../errors.js';
import { parseSize } from '../options/size.js';
import { BY_QMP, toQmpName, validateSpelled } from '../options/throttle-names.js';
import type { ThrottleLimits } from '../throttle/limits.js';

/** Limit flags: every QEMU limit name with '-' for '_' (--iops, --bps-rd, --iops-max-length, --iops-size, …). */
export const LIMIT_FLAGS = Object.fromEntries([...BY_QMP.keys()].map((q) => [q.replace(/_/g, '-'), { type: 'string' as const }]));

/** A numeric flag value; EINVAL naming the flag when it is not a number. */
export function num(flag: string, v: string | undefined, parse: (s: string) => number = Number): number | undefined {
  if (v === undefined) return undefined;
  const n = parse(v);
  if (!Number.isFinite(n)) throw new BlockError('EINVAL', `--${flag}: '${v}' is not a number`, { field: flag });
  return n;
}

/**
 * A byte-count flag (--bs, --size, --bps-rd, --iops-size, --memory-budget, …): bytes, or a number
 * with a k/M/G/T/P/E suffix (powers of 1024) as QEMU sizes are written. A negative number is
 * returned as it is, for the caller's range check to name; anything else that is not a size is
 * EINVAL naming the flag.
 */
export function sizeFlag(flag: string, v: string): number;
export function sizeFlag(flag: string, v: string | undefined): number | undefined;
export function sizeFlag(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  let n = parseSize(v);
  if (Number.isNaN(n) && /^\s*-\d/.test(v)) n = Number(v);
  if (!Number.isFinite(n)) throw new BlockError('EINVAL', `--${flag}: '${v}' is not a size (e.g. 4096, 4k, 1M)`, { field: flag });
  return n;
}

/** Limit fields that count bytes (bps-*, bps-*-max, iops-size) and so take size suffixes; iops and burst lengths are plain numbers. */
const isBytes = (field: string) => field === 'iopsSize' || (field.startsWith('bps') && !field.endsWith('MaxLength'));

/**
 * Reads the limit flags out of parsed arguments into `limits` (which may already hold limits,
 * e.g. from a --drive string) and checks the result with QEMU's rules, errors naming the flag
 * typed (`--iops`, `--bps-rd-max`, …).
 */
export function parseLimitFlags(values: Record<string, unknown>, limits: ThrottleLimits = {}): ThrottleLimits {
  const spelling = new Map<string, string>();
  for (const [flag] of Object.entries(LIMIT_FLAGS)) {
    const value = values[flag] as string | undefined;
    if (value === undefined) continue;
    const field = BY_QMP.get(flag.replace(/-/g, '_'))!;
    limits[field] = isBytes(field) ? sizeFlag(flag, value) : num(flag, value);
    spelling.set(field, `--${flag}`);
  }
  // QEMU's rules, reported with the flag names the user typed.
  validateSpelled(limits, spelling, (f) => `--${toQmpName(f).replace(/_/g, '-')}`);
  return limits;
}
