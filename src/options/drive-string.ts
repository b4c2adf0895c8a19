/**
 * QEMU `-drive` option strings: `file=a.qcow2,format=qcow2,iops=100,throttling.bps-read=1048576,group=g1`.
 *
 * QemuOpts syntax: `key=value` pairs separated by commas, `,,` for a comma inside a value, a
 * bare `key` meaning `key=on`. Throttling takes the `throttling.*` names (QAPI ThrottleLimits
 * with a prefix) or the legacy short names (`bps`, `bps_rd`, …, `iops_size`, `group`); giving
 * both spellings of one parameter is an error, as in QEMU. Burst lengths have no legacy name.
 *
 * Other keys: `file`, `format`, `id`, `readonly` are used; `if`, `media=disk`, `index`, `bus`,
 * `unit`, `serial`, `cache` (writeback, writethrough, unsafe, directsync and none are read as
 * "buffered I/O"), `aio`, `discard` (ignore/unmap: discards always pass down),
 * `werror`/`rerror=report` and `detect-zeroes=off` are accepted and have no effect here;
 * `snapshot=on`, `copy-on-read=on`, `detect-zeroes=on|unmap`, `media=cdrom` and other error
 * policies are refused with ENOTSUP because this library cannot honour them.
 */
import { BlockError } from '../errors.js';
import type { DriveOptions } from '../layer.js';
import type { ThrottleLimits, ThrottleOptions } from '../throttle/limits.js';
import { BY_QAPI, BY_QMP, toQapiName, validateSpelled } from './throttle-names.js';

/** What a -drive string says. */
export interface ParsedDriveString {
  id?: string;
  filename?: string;
  format?: string;
  readOnly?: boolean;
  /** Limits and group, only the fields given. */
  throttle?: ThrottleOptions;
}

const ACCEPTED: Record<string, ((v: string) => boolean) | null> = {
  if: null,
  index: null,
  bus: null,
  unit: null,
  serial: null,
  aio: (v) => ['threads', 'native', 'io_uring'].includes(v),
  cache: (v) => ['writeback', 'writethrough', 'unsafe', 'directsync', 'none'].includes(v),
  discard: (v) => ['ignore', 'off', 'unmap', 'on'].includes(v),
  media: (v) => v === 'disk',
  werror: (v) => v === 'report',
  rerror: (v) => v === 'report',
  'detect-zeroes': (v) => v === 'off',
  snapshot: (v) => v === 'off',
  'copy-on-read': (v) => v === 'off',
};

/** Splits `a=1,b=x,,y,c` into [key, value] pairs (`,,` is a literal comma; a bare key is `on`). */
export function splitQemuOpts(input: string): [string, string][] {
  const out: [string, string][] = [];
  let i = 0;
  while (i < input.length) {
    let token = '';
    for (; i < input.length; i++) {
      const c = input[i];
      if (c === ',') {
        if (input[i + 1] === ',') {
          token += ',';
          i++;
          continue;
        }
        break;
      }
      token += c;
    }
    i++; // skip the separating comma
    if (token === '') continue;
    const eq = token.indexOf('=');
    if (eq === 0) throw new BlockError('EINVAL', `Invalid parameter '${token}': empty name`, { field: token });
    out.push(eq < 0 ? [token, 'on'] : [token.slice(0, eq), token.slice(eq + 1)]);
  }
  return out;
}

function parseBool(key: string, v: string): boolean {
  if (['on', 'yes', 'true'].includes(v)) return true;
  if (['off', 'no', 'false'].includes(v)) return false;
  throw new BlockError('EINVAL', `Parameter '${key}' expects 'on' or 'off'`, { field: key });
}

/** QemuOpts number: decimal or 0x hex, non-negative, and here at most 2^53-1. */
function parseNumber(key: string, v: string): number {
  const n = /^0x[0-9a-f]+$/i.test(v) ? Number.parseInt(v, 16) : /^\d+$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new BlockError('EINVAL', `Parameter '${key}' expects a non-negative number below 2^53`, { field: key });
  return n;
}

/** Parses a -drive option string. */
export function parseDriveString(input: string): ParsedDriveString {
  const result: ParsedDriveString = {};
  const limits: ThrottleLimits = {};
  let group: string | undefined;
  const givenAs = new Map<string, string>(); // canonical throttling.* name -> spelling used
  const spelling = new Map<string, string>(); // camel field -> spelling used
  const seen = new Set<string>();
  for (const [key, value] of splitQemuOpts(input)) {
    let canonical: string | undefined;
    let field: keyof ThrottleLimits | 'group' | undefined;
    if (key.startsWith('throttling.')) {
      const rest = key.slice('throttling.'.length);
      if (rest === 'group') field = 'group';
      else field = BY_QAPI.get(rest);
      if (field) canonical = key;
    } else if (key === 'group') {
      field = 'group';
      canonical = 'throttling.group';
    } else if (!key.endsWith('_length')) {
      field = BY_QMP.get(key);
      if (field) canonical = `throttling.${toQapiName(field)}`;
    }
    if (field && canonical) {
      const other = givenAs.get(canonical);
      if (other !== undefined) {
        if (other === key) throw new BlockError('EINVAL', `Parameter '${key}' given twice`, { field: key });
        const [alias, name] = key === canonical ? [other, key] : [key, canonical];
        throw new BlockError('EINVAL', `'${name}' and its alias '${alias}' can't be used at the same time`, { field: name });
      }
      givenAs.set(canonical, key);
      if (field === 'group') group = value;
      else {
        limits[field] = parseNumber(key, value);
        spelling.set(field, key);
      }
      continue;
    }
    if (seen.has(key)) throw new BlockError('EINVAL', `Parameter '${key}' given twice`, { field: key });
    seen.add(key);
    switch (key) {
      case 'file':
        result.filename = value;
        break;
      case 'format':
        result.format = value;
        break;
      case 'id':
        result.id = value;
        break;
      case 'readonly':
      case 'read-only':
        result.readOnly = parseBool(key, value);
        break;
      default: {
        if (!(key in ACCEPTED)) throw new BlockError('EINVAL', `Invalid parameter '${key}'`, { field: key });
        const ok = ACCEPTED[key];
        if (ok && !ok(value)) {
          throw new BlockError('ENOTSUP', `${key}=${value} is not supported by this block layer`, { field: key });
        }
      }
    }
  }
  if (Object.keys(limits).length > 0 || group !== undefined) {
    validateSpelled(limits, spelling, (f) => `throttling.${toQapiName(f)}`);
    result.throttle = group === undefined ? limits : { ...limits, group };
  }
  return result;
}

/** Parses a -drive string into drive options: `{ id, driver: format, file: { driver: 'file', filename }, readOnly, throttle }`. */
export function driveStringToOptions(input: string, options: { defaultFormat?: string } = {}): DriveOptions {
  const p = parseDriveString(input);
  if (p.filename === undefined) throw new BlockError('EINVAL', `file: required`, { field: 'file' });
  const out: DriveOptions = { driver: p.format ?? options.defaultFormat ?? 'raw', file: { driver: 'file', filename: p.filename } };
  if (p.id !== undefined) out.id = p.id;
  if (p.readOnly !== undefined) out.readOnly = p.readOnly;
  if (p.throttle !== undefined) out.throttle = p.throttle;
  return out;
}

/** Writes limits back as a -drive string fragment using the `throttling.*` names (`throttling.iops-total=100,…`). */
export function toDriveString(throttle: ThrottleOptions): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(throttle)) {
    if (v === undefined) continue;
    if (k === 'group') parts.push(`throttling.group=${String(v).replaceAll(',', ',,')}`);
    else parts.push(`throttling.${toQapiName(k)}=${v}`);
  }
  return parts.join(',');
}
