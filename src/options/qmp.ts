/**
 * QMP spellings: `block_set_io_throttle` arguments, query-block's throttle fields, and the
 * QAPI ThrottleLimits object (QOM `limits` of a throttle-group).
 */
import { BlockError } from '../errors.js';
import { fromConfig, type ThrottleLimits, type ThrottleOptions, THROTTLE_VALUE_MAX, validateLimits } from '../throttle/limits.js';
import { expectLimits, expectRecord, expectString, expectWith } from './input.js';
import { BY_QAPI, BY_QMP, LIMIT_FIELDS, toQapiName, toQmpName, validateSpelled } from './throttle-names.js';

const MANDATORY = ['bps', 'bps_rd', 'bps_wr', 'iops', 'iops_rd', 'iops_wr'] as const;

/** What block_set_io_throttle asks for. */
export interface BlockSetIoThrottle {
  /** BlockBackend name (QMP `device`, deprecated there). */
  device?: string;
  /** qdev id or QOM path (QMP `id`). */
  id?: string;
  /** The limits and group, ready for `drive.setLimits()`. */
  throttle: ThrottleOptions;
}

/**
 * A QMP integer: any JSON integer (a number that is an integer, or a bigint). Magnitudes
 * beyond 2^53 are clamped to 1e15+1 with their sign: every such value fails QEMU's rules
 * the same way (range, or burst length too high), so the verdict is unchanged.
 */
function qmpInt(key: string, v: unknown): number {
  if (typeof v === 'bigint') {
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) return THROTTLE_VALUE_MAX + 1;
    if (v < -BigInt(Number.MAX_SAFE_INTEGER)) return -(THROTTLE_VALUE_MAX + 1);
    return Number(v);
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new BlockError('EINVAL', `Invalid parameter type for '${key}', expected: integer`, { field: key });
  }
  return Number.isSafeInteger(v) ? v : Math.sign(v) * (THROTTLE_VALUE_MAX + 1);
}

/** Arguments checked as QAPI would (members, types), limits not yet validated. */
interface Unvalidated extends BlockSetIoThrottle {
  spelling: Map<string, string>;
}

/** The QAPI unmarshalling step of block_set_io_throttle: mandatory members, types, unknown members. */
function unmarshal(args: Record<string, unknown>): Unvalidated {
  for (const m of MANDATORY) {
    if (!Object.hasOwn(args, m)) throw new BlockError('EINVAL', `Parameter '${m}' is missing`, { field: m });
  }
  const limits: ThrottleLimits = {};
  const spelling = new Map<string, string>();
  const out: Omit<BlockSetIoThrottle, 'throttle'> = {};
  let group: string | undefined;
  for (const [key, value] of Object.entries(args)) {
    if (value === undefined) continue;
    if (key === 'device' || key === 'id' || key === 'group') {
      if (typeof value !== 'string') throw new BlockError('EINVAL', `Invalid parameter type for '${key}', expected: string`, { field: key });
      if (key === 'group') group = value;
      else out[key] = value;
      continue;
    }
    const field = BY_QMP.get(key);
    if (!field) throw new BlockError('EINVAL', `Parameter '${key}' is unexpected`, { field: key });
    let n = qmpInt(key, value);
    // QMP carries lengths as uint64: -1 means 2^64-1. Any length above 1e15 fails the same rules.
    if (field.endsWith('MaxLength') && (n < 0 || n > THROTTLE_VALUE_MAX)) n = THROTTLE_VALUE_MAX + 1;
    if (n !== 0 || field.endsWith('MaxLength')) limits[field] = n;
    spelling.set(field, key);
  }
  // qmp_get_blk: exactly one of the two names.
  if ((out.device === undefined) === (out.id === undefined)) {
    throw new BlockError('EINVAL', `Need exactly one of 'id' and 'device'`, { field: out.device === undefined ? 'device' : 'id' });
  }
  return { ...out, throttle: group === undefined ? limits : { ...limits, group }, spelling };
}

/**
 * QMP's rules for burst lengths: uint64 (no UINT_MAX bound as in the option parsers), so
 * only "too high for this burst rate" limits them. QEMU 7.2 takes iops_wr_max_length 2^40
 * with iops_wr_max 20; the drive must apply them with the same rules, not re-check them
 * with the option parsers' bound.
 */
const QMP_RULES = { maxBurstLength: Number.POSITIVE_INFINITY };

/** QEMU's validity rules on unmarshalled arguments, with QMP's uint64 burst lengths. */
function validate(u: Unvalidated): BlockSetIoThrottle {
  const { spelling, ...parsed } = u;
  const { group: _, ...limits } = parsed.throttle;
  validateSpelled(limits, spelling, toQmpName, QMP_RULES);
  return parsed;
}

/**
 * Parses block_set_io_throttle arguments with QMP's rules: the six base limits are
 * mandatory, exactly one of `device` and `id` names the drive, unknown members are refused,
 * then QEMU's validity rules apply. Burst lengths are uint64 in QMP (not limited to
 * UINT_MAX as in the option parsers): a negative or huge `*_max_length` fails as "burst
 * length too high for this burst rate" (or "set without burst rate"), as in QEMU. A
 * negative `iops_size` is refused (QEMU would accept it). Zero limits are left out of
 * `throttle` (0 means off).
 */
export function parseBlockSetIoThrottle(args: Record<string, unknown>): BlockSetIoThrottle {
  return validate(unmarshal(expectRecord(args, 'arguments')));
}

/** Builds block_set_io_throttle arguments for limits (the six mandatory members always present). */
export function toBlockSetIoThrottle(throttle: ThrottleOptions, target: { device?: string; id?: string }): Record<string, unknown> {
  expectLimits(throttle, 'throttle', true);
  expectRecord(target, 'target');
  const out: Record<string, unknown> = { ...target };
  for (const m of MANDATORY) out[m] = 0;
  for (const [k, v] of Object.entries(throttle)) {
    if (v === undefined) continue;
    out[k === 'group' ? 'group' : toQmpName(k)] = v;
  }
  return out;
}

/**
 * query-block's `inserted` throttle fields: the six base limits always, each `*_max` only if
 * non-zero, each `*_max_length` only with its `*_max`, `iops_size` only if non-zero, `group`
 * only while throttling is on.
 */
export function toQueryBlockThrottle(limits: ThrottleLimits | null, group?: string): Record<string, number | string> {
  if (limits !== null) expectLimits(limits, 'limits', false);
  if (group !== undefined) expectString(group, 'group');
  const out: Record<string, number | string> = {};
  for (const m of MANDATORY) out[m] = limits?.[BY_QMP.get(m)!] ?? 0;
  if (!limits) return out;
  for (const f of LIMIT_FIELDS) {
    if (!f.endsWith('Max')) continue;
    const max = limits[f];
    if (!max) continue;
    out[toQmpName(f)] = max;
    const lengthField = `${f}Length` as keyof ThrottleLimits;
    out[toQmpName(lengthField)] = limits[lengthField] ?? 1;
  }
  if (limits.iopsSize) out.iops_size = limits.iopsSize;
  const enabled = LIMIT_FIELDS.some((f) => !f.endsWith('Max') && !f.endsWith('Length') && f !== 'iopsSize' && (limits[f] ?? 0) > 0);
  if (enabled && group !== undefined) out.group = group;
  return out;
}

/**
 * QAPI ThrottleLimits (`iops-total`, …, `iops-size`; the QOM `limits` property) to our
 * limits; unknown members refused. As a qom-set of `limits`, missing members keep their
 * value in `current` (default: none set); the merged result is validated with QEMU's rules
 * and returned with only the fields that are set. Burst lengths above UINT_MAX are refused
 * with `<name>: value must be in the range [0, 4294967295]`.
 */
export function fromQapiLimits(obj: Record<string, unknown>, current: ThrottleLimits = {}): ThrottleLimits {
  expectRecord(obj, 'limits');
  expectLimits(current, 'current', false);
  const out: ThrottleLimits = { ...current };
  const spelling = new Map<string, string>();
  for (const [key, value] of Object.entries(obj)) {
    if (value === undefined) continue;
    const field = BY_QAPI.get(key);
    if (!field) throw new BlockError('EINVAL', `Parameter '${key}' is unexpected`, { field: key });
    out[field] = qmpInt(key, value);
    spelling.set(field, key);
  }
  validateSpelled(out, spelling, toQapiName);
  return fromConfig(validateLimits(out));
}

/** Our limits as a full QAPI ThrottleLimits (all 19 members, as qom-get of `limits` returns them). */
export function toQapiLimits(limits: ThrottleLimits): Record<string, number> {
  expectLimits(limits, 'limits', false);
  const out: Record<string, number> = {};
  for (const f of LIMIT_FIELDS) out[toQapiName(f)] = limits[f] ?? (f.endsWith('Length') ? 1 : 0);
  return out;
}

/** What applying QMP commands needs from a BlockLayer (kept structural to avoid an import cycle). */
interface DriveLookup {
  drive(id: string): { setLimits(t: ThrottleOptions, rules?: { maxBurstLength?: number }): void; getLimits(): (ThrottleLimits & { group: string }) | null } | undefined;
}

/**
 * Applies a QMP `block_set_io_throttle` command to a layer, in QEMU's order: checks the
 * arguments' members and types, finds the drive by `device` or `id` (`Device 'x' not
 * found`), validates the limits, then `drive.setLimits()`.
 */
export function blockSetIoThrottle(layer: DriveLookup, args: Record<string, unknown>): void {
  expectWith(layer, 'layer', 'drive');
  const u = unmarshal(expectRecord(args, 'arguments'));
  const name = (u.device ?? u.id)!;
  const drive = layer.drive(name);
  if (!drive) throw new BlockError('ENOENT', `Device '${name}' not found`, { field: u.device !== undefined ? 'device' : 'id' });
  const { throttle } = validate(u);
  const { group, ...limits } = throttle;
  // All-zero limits switch throttling off and ignore `group`, as in QEMU.
  const off = Object.entries(limits).every(([k, v]) => k.endsWith('Length') || !v);
  drive.setLimits(off ? {} : throttle, QMP_RULES);
}

/** query-block's throttle fields of a drive. */
export function queryBlockThrottle(drive: { getLimits(): (ThrottleLimits & { group: string }) | null }): Record<string, number | string> {
  expectWith(drive, 'drive', 'getLimits');
  const l = drive.getLimits();
  if (!l) return toQueryBlockThrottle(null);
  const { group, ...limits } = l;
  return toQueryBlockThrottle(limits, group);
}
