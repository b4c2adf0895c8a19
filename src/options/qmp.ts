/**
 * QMP spellings: `block_set_io_throttle` arguments, query-block's throttle fields, and the
 * QAPI ThrottleLimits object (QOM `limits` of a throttle-group).
 */
import { BlockError } from '../errors.js';
import { type ThrottleLimits, type ThrottleOptions, THROTTLE_VALUE_MAX } from '../throttle/limits.js';
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

function qmpInt(key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    throw new BlockError('EINVAL', `Invalid parameter type for '${key}', expected: integer`, { field: key });
  }
  return v;
}

/**
 * Parses block_set_io_throttle arguments with QMP's rules: the six base limits are
 * mandatory, `device` or `id` names the drive, unknown members are refused. As in QEMU a
 * negative or huge `*_max_length` reaches the validity rules (and fails there as "burst
 * length too high"); a negative `iops_size` is refused (QEMU would accept it).
 */
export function parseBlockSetIoThrottle(args: Record<string, unknown>): BlockSetIoThrottle {
  for (const m of MANDATORY) {
    if (!(m in args)) throw new BlockError('EINVAL', `Parameter '${m}' is missing`, { field: m });
  }
  const limits: ThrottleLimits = {};
  const spelling = new Map<string, string>();
  const out: Omit<BlockSetIoThrottle, 'throttle'> = {};
  let group: string | undefined;
  for (const [key, value] of Object.entries(args)) {
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
  if (out.device === undefined && out.id === undefined) {
    throw new BlockError('EINVAL', `Need exactly one of 'id' and 'device'`, { field: 'device' });
  }
  validateSpelled(limits, spelling, toQmpName, { maxBurstLength: Number.POSITIVE_INFINITY });
  return { ...out, throttle: group === undefined ? limits : { ...limits, group } };
}

/** Builds block_set_io_throttle arguments for limits (the six mandatory members always present). */
export function toBlockSetIoThrottle(throttle: ThrottleOptions, target: { device?: string; id?: string }): Record<string, unknown> {
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

/** QAPI ThrottleLimits (`iops-total`, …, `iops-size`) to our limits; unknown members refused. */
export function fromQapiLimits(obj: Record<string, unknown>): ThrottleLimits {
  const out: ThrottleLimits = {};
  const spelling = new Map<string, string>();
  for (const [key, value] of Object.entries(obj)) {
    const field = BY_QAPI.get(key);
    if (!field) throw new BlockError('EINVAL', `Parameter '${key}' is unexpected`, { field: key });
    out[field] = qmpInt(key, value);
    spelling.set(field, key);
  }
  validateSpelled(out, spelling, toQapiName);
  return out;
}

/** Our limits as a full QAPI ThrottleLimits (all 19 members, as qom-get of `limits` returns them). */
export function toQapiLimits(limits: ThrottleLimits): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of LIMIT_FIELDS) out[toQapiName(f)] = limits[f] ?? (f.endsWith('Length') ? 1 : 0);
  return out;
}

/** What applying QMP commands needs from a BlockLayer (kept structural to avoid an import cycle). */
interface DriveLookup {
  drive(id: string): { setLimits(t: ThrottleOptions): void; getLimits(): (ThrottleLimits & { group: string }) | null } | undefined;
}

/**
 * Applies a QMP `block_set_io_throttle` command to a layer, as QEMU would: parses and
 * validates the arguments, finds the drive by `device` or `id` (`Device 'x' not found`), then
 * `drive.setLimits()`.
 */
export function blockSetIoThrottle(layer: DriveLookup, args: Record<string, unknown>): void {
  const { device, id, throttle } = parseBlockSetIoThrottle(args);
  const name = (device ?? id)!;
  const drive = layer.drive(name);
  if (!drive) throw new BlockError('ENOENT', `Device '${name}' not found`, { field: device !== undefined ? 'device' : 'id' });
  const { group, ...limits } = throttle;
  // All-zero limits switch throttling off and ignore `group`, as in QEMU.
  const off = Object.entries(limits).every(([k, v]) => k.endsWith('Length') || !v);
  drive.setLimits(off ? {} : throttle);
}

/** query-block's throttle fields of a drive. */
export function queryBlockThrottle(drive: { getLimits(): (ThrottleLimits & { group: string }) | null }): Record<string, number | string> {
  const l = drive.getLimits();
  if (!l) return toQueryBlockThrottle(null);
  const { group, ...limits } = l;
  return toQueryBlockThrottle(limits, group);
}
