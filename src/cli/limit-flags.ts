import { BlockError } from '../errors.js';
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
    limits[field] = num(flag, value);
    spelling.set(field, `--${flag}`);
  }
  // QEMU's rules, reported with the flag names the user typed.
  validateSpelled(limits, spelling, (f) => `--${toQmpName(f).replace(/_/g, '-')}`);
  return limits;
}
