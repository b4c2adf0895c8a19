/**
 * QOM `throttle-group` objects: `-object throttle-group,id=tg0,x-iops-total=100` or QMP
 * `object-add {"qom-type":"throttle-group","id":"tg0","limits":{"iops-total":100}}`.
 * Limits come either as the `limits` member (QAPI ThrottleLimits, hyphen names, also as
 * dotted `limits.iops-total=…` keys in the option string) or as the `x-` properties
 * (`x-iops-total`, …, `x-bps-write-max-length`, `x-iops-size`). Mixing the two is refused:
 * QEMU applies them in an unspecified order.
 */
import { BlockError } from '../errors.js';
import type { ThrottleLimits } from '../throttle/limits.js';
import { splitQemuOpts } from './drive-string.js';
import { expectLimits, expectRecord, expectString } from './input.js';
import { fromQapiLimits, toQapiLimits } from './qmp.js';
import { BY_QAPI, toQapiName, validateSpelled } from './throttle-names.js';
import { isWellFormedId } from '../ids.js';

/** A throttle group object: its id (the group name) and its limits (only the fields set). */
export interface ThrottleGroupObject {
  /** The object's id: the group's name. */
  id: string;
  /** The group's limits, camelCase. */
  limits: ThrottleLimits;
}

const MAX_LENGTH = 4_294_967_295;

function notFound(key: string): BlockError {
  return new BlockError('EINVAL', `Property 'throttle-group.${key}' not found`, { field: key });
}

/** QEMU's object id rule (id_wellformed): a letter, then letters, digits, '-', '.', '_'. */
function checkId(id: string): void {
  if (!isWellFormedId(id)) {
    throw new BlockError('EINVAL', `Parameter 'id' expects an identifier (letters, digits, '-', '.', '_', starting with a letter)`, { field: 'id' });
  }
}

/** An x- property value: an integer (number, bigint or decimal string), not negative. */
function xValue(key: string, v: unknown): number {
  let n: number;
  if (typeof v === 'string') n = /^-?\d+$/.test(v.trim()) ? Number(v.trim()) : Number.NaN;
  else if (typeof v === 'bigint') n = Number(v);
  else n = typeof v === 'number' ? v : Number.NaN;
  if (!Number.isInteger(n)) throw new BlockError('EINVAL', `Invalid parameter type for '${key}', expected: integer`, { field: key });
  if (n < 0) throw new BlockError('EINVAL', `${key}: Property values cannot be negative`, { field: key });
  if (key.endsWith('-max-length') && n > MAX_LENGTH) {
    throw new BlockError('EINVAL', `${key}: value must be in the range [0, ${MAX_LENGTH}]`, { field: key });
  }
  return Number.isSafeInteger(n) ? n : 1e15 + 1;
}

/** Parses a throttle-group object from an `-object` option string or `object-add` arguments. */
export function parseThrottleGroupObject(input: string | Record<string, unknown>): ThrottleGroupObject {
  let props: Record<string, unknown>;
  if (typeof input === 'string') {
    const pairs = splitQemuOpts(input);
    props = {};
    // `-object throttle-group,id=…`: a bare first key is the type.
    if (pairs.length > 0 && pairs[0][1] === 'on' && !input.startsWith(`${pairs[0][0]}=`) && pairs[0][0] !== 'qom-type') {
      props['qom-type'] = pairs.shift()![0];
    }
    const limits: Record<string, unknown> = {};
    for (const [k, v] of pairs) {
      if (k.startsWith('limits.')) limits[k.slice('limits.'.length)] = /^\d+$/.test(v) ? Number(v) : v;
      else props[k] = v;
    }
    if (Object.keys(limits).length > 0) props.limits = limits;
  } else props = expectRecord(input, 'object');

  const type = props['qom-type'];
  if (type !== undefined && type !== 'throttle-group') {
    throw new BlockError('EINVAL', `qom-type: expected 'throttle-group', got '${String(type)}'`, { field: 'qom-type' });
  }
  const id = props.id;
  if (typeof id !== 'string' || id === '') throw new BlockError('EINVAL', `Parameter 'id' is missing`, { field: 'id' });
  checkId(id);

  const xLimits: ThrottleLimits = {};
  const spelling = new Map<string, string>();
  for (const [key, value] of Object.entries(props)) {
    if (key === 'qom-type' || key === 'id' || key === 'limits' || value === undefined) continue;
    const field = key.startsWith('x-') ? BY_QAPI.get(key.slice(2)) : undefined;
    if (!field) throw notFound(key);
    xLimits[field] = xValue(key, value);
    spelling.set(field, key);
  }
  if (props.limits !== undefined) {
    if (spelling.size > 0) {
      throw new BlockError('EINVAL', `use either 'limits' or the x- properties, not both (got 'limits' and '${[...spelling.values()][0]}')`, {
        field: 'limits',
      });
    }
    if (typeof props.limits !== 'object' || props.limits === null || Array.isArray(props.limits)) {
      throw new BlockError('EINVAL', `Invalid parameter type for 'limits', expected: object`, { field: 'limits' });
    }
    return { id, limits: fromQapiLimits(props.limits as Record<string, unknown>) };
  }
  validateSpelled(xLimits, spelling, (f) => `x-${toQapiName(f)}`);
  for (const [k, v] of Object.entries(xLimits)) {
    if (v === 0 || (k.endsWith('Length') && v === 1)) delete xLimits[k as keyof ThrottleLimits];
  }
  return { id, limits: xLimits };
}

/** `object-add` arguments for a throttle group (the `limits` member with all 19 fields). */
export function toThrottleGroupObject(id: string, limits: ThrottleLimits): Record<string, unknown> {
  checkId(expectString(id, 'id'));
  expectLimits(limits, 'limits', false);
  return { 'qom-type': 'throttle-group', id, limits: toQapiLimits(limits) };
}
