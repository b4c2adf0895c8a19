/**
 * QEMU `-drive` option strings: `file=a.qcow2,format=qcow2,iops=100,throttling.bps-read=1048576,group=g1`.
 *
 * QemuOpts syntax: `key=value` pairs separated by commas, `,,` for a comma inside a value, a
 * bare `key` meaning `key=on`, a repeated key keeping its last value. Booleans are
 * on/off, yes/no, true/false, y/n. Numbers are QemuOpts numbers (decimal, `0x` hex, `0`
 * octal), non-negative. Throttling takes the `throttling.*` names (QAPI ThrottleLimits with
 * a prefix) or the legacy short names (`bps`, `bps_rd`, …, `iops_size`, `group`); giving
 * both spellings of one parameter is an error, as in QEMU (`readonly`/`read-only` too).
 * Burst lengths have no legacy name (`bps_max_length` is an unknown option).
 *
 * Used: `file`, `format` (or `driver`, not both), `id`, `readonly`/`read-only`,
 * `aio=threads|io_uring` (the file driver's engine; `aio=native`, Linux AIO, is accepted and
 * leaves the default engine), the error
 * policies `rerror=report|ignore|stop` and `werror=report|ignore|stop|enospc` (other values,
 * `auto` and `rerror=enospc` included, refused with QEMU's `'x' invalid read error action`).
 * Accepted with no effect: `if`, `index`, `bus`, `unit`, `addr`, `serial`, `media=disk`,
 * `cache=writeback|none|unsafe` (we write through the page
 * cache and honour flushes: not weaker than any of them), `discard=ignore|unmap` (discards
 * always pass down), `detect-zeroes=off`, `snapshot=off`, `copy-on-read=off`.
 * Refused with ENOTSUP, naming the option: `cache=writethrough|directsync` (no flush after
 * every write), `media=cdrom`, `snapshot=on`, `copy-on-read=on`, `detect-zeroes=on|unmap`,
 * other `aio` values.
 * Anything else is refused with EINVAL `Invalid parameter 'name'`.
 */
import { BlockError } from '../errors.js';
import type { DriveOptions } from './drive-options.js';
import type { ThrottleLimits, ThrottleOptions } from '../throttle/limits.js';
import { type ErrorAction, parseDriveErrorAction } from './error-policy.js';
import { expectLimits, expectRecord, expectString } from './input.js';
import { BY_QAPI, BY_QMP, toQapiName, toQmpName, validateSpelled } from './throttle-names.js';

/** What a -drive string says. */
export interface ParsedDriveString {
  /** The drive's id (`id=`). */
  id?: string;
  /** The image (`file=`). */
  filename?: string;
  /** The image format (`format=`); absent: probe it. */
  format?: string;
  /** `readonly=on` (or `read-only=on`). */
  readOnly?: boolean;
  /** Policy on read errors (`rerror=`). */
  rerror?: ErrorAction;
  /** Policy on write errors (`werror=`). */
  werror?: ErrorAction;
  /** Limits and group, only the fields given. */
  throttle?: ThrottleOptions;
  /** The file driver's I/O engine (`aio=`); absent for `aio=native` and when not given. */
  aio?: 'threads' | 'io_uring';
}

/**
 * Keys accepted without effect: null = any value, otherwise the values we can honour (any
 * other value is refused with ENOTSUP). `cache=writethrough|directsync` promise a flush
 * after every write, which this library does not do, so they are refused; `none` (direct
 * I/O, writeback semantics) and `unsafe` (flushes ignored; we flush anyway) are not weaker
 * than what we do.
 */
const ACCEPTED: Record<string, ((v: string) => boolean) | null> = {
  if: null,
  index: null,
  bus: null,
  unit: null,
  addr: null,
  serial: null,
  cache: (v) => ['writeback', 'unsafe', 'none'].includes(v),
  discard: (v) => ['ignore', 'off', 'unmap', 'on'].includes(v),
  media: (v) => v === 'disk',
  'detect-zeroes': (v) => v === 'off',
  snapshot: (v) => isBool(v) && !parseBool('snapshot', v),
  'copy-on-read': (v) => isBool(v) && !parseBool('copy-on-read', v),
};

/** -drive keys QEMU renames before parsing (blockdev.c opt_renames), besides the throttling ones. */
const OTHER_ALIASES: Record<string, string> = { readonly: 'read-only' };

/** Splits `a=1,b=x,,y,c` into [key, value] pairs (`,,` is a literal comma; a bare key is `on`). */
export function splitQemuOpts(input: string): [string, string][] {
  expectString(input, 'input');
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

const TRUE = ['on', 'yes', 'true', 'y'];
const FALSE = ['off', 'no', 'false', 'n'];
const isBool = (v: string) => TRUE.includes(v) || FALSE.includes(v);

/** QAPI boolean: on/yes/true/y or off/no/false/n. */
function parseBool(key: string, v: string): boolean {
  if (TRUE.includes(v)) return true;
  if (FALSE.includes(v)) return false;
  throw new BlockError('EINVAL', `Parameter '${key}' expects 'on' or 'off'`, { field: key });
}

/**
 * QemuOpts number (qemu_strtou64, base 0): decimal, `0x` hex or `0` octal; here non-negative
 * and at most 2^53-1 (anything above 1e15 fails QEMU's range rule anyway).
 */
function parseNumber(key: string, v: string): number {
  let n = Number.NaN;
  if (/^0x[0-9a-f]+$/i.test(v)) n = Number.parseInt(v.slice(2), 16);
  else if (/^0[0-7]+$/.test(v)) n = Number.parseInt(v.slice(1), 8);
  else if (/^(0|[1-9]\d*)$/.test(v)) n = Number(v); // `09`: strtoull stops at 9, QEMU refuses
  if (!Number.isSafeInteger(n)) {
    const what = /^-\d+$/.test(v) ? 'a non-negative number' : /^\d+$/.test(v) ? 'a number below 2^53' : 'a number';
    throw new BlockError('EINVAL', `Parameter '${key}' expects ${what}`, { field: key });
  }
  return n;
}

/** Canonical (`throttling.*`) name and field of a throttling key in either spelling. */
function throttlingKey(key: string): { canonical: string; field: keyof ThrottleLimits | 'group' } | undefined {
  if (key.startsWith('throttling.')) {
    const rest = key.slice('throttling.'.length);
    const field = rest === 'group' ? 'group' : BY_QAPI.get(rest);
    return field ? { canonical: key, field } : undefined;
  }
  if (key === 'group') return { canonical: 'throttling.group', field: 'group' };
  if (key.endsWith('_length')) return undefined; // burst lengths have no legacy name
  const field = BY_QMP.get(key);
  return field ? { canonical: `throttling.${toQapiName(field)}`, field } : undefined;
}

/**
 * Parses a -drive string. As in QemuOpts a key given twice keeps its last value; a parameter
 * given under both of its spellings is refused with QEMU's alias message. The limits are
 * validated with QEMU's rules (errors name the spelling used).
 */
export function parseDriveString(input: string): ParsedDriveString {
  // Pass 1: last value of each key, and the alias rule (blockdev.c qemu_opt_rename).
  const values = new Map<string, string>();
  for (const [key, value] of splitQemuOpts(input)) {
    values.delete(key); // keep insertion order = position of the last occurrence
    values.set(key, value);
  }
  const givenAs = new Map<string, string>(); // canonical name -> spelling used
  for (const key of values.keys()) {
    const canonical = throttlingKey(key)?.canonical ?? (Object.hasOwn(OTHER_ALIASES, key) ? OTHER_ALIASES[key] : key);
    const other = givenAs.get(canonical);
    if (other !== undefined) {
      const [alias, name] = key === canonical ? [other, key] : [key, canonical];
      throw new BlockError('EINVAL', `'${name}' and its alias '${alias}' can't be used at the same time`, { field: name });
    }
    givenAs.set(canonical, key);
  }
  if (values.has('driver') && values.has('format')) {
    throw new BlockError('EINVAL', "Cannot specify both 'driver' and 'format'", { field: 'driver' });
  }

  // Pass 2: meaning.
  const result: ParsedDriveString = {};
  const limits: ThrottleLimits = {};
  let group: string | undefined;
  const spelling = new Map<string, string>(); // camel field -> spelling used
  for (const [key, value] of values) {
    const t = throttlingKey(key);
    if (t) {
      if (t.field === 'group') group = value;
      else {
        limits[t.field] = parseNumber(key, value);
        spelling.set(t.field, key);
      }
      continue;
    }
    switch (key) {
      case 'file':
        result.filename = value;
        break;
      case 'format':
      case 'driver':
        result.format = value;
        break;
      case 'id':
        result.id = value;
        break;
      case 'readonly':
      case 'read-only':
        result.readOnly = parseBool(key, value);
        break;
      case 'rerror':
        result.rerror = parseDriveErrorAction(value, 'read', key);
        break;
      case 'werror':
        result.werror = parseDriveErrorAction(value, 'write', key);
        break;
      case 'aio':
        if (value === 'threads' || value === 'io_uring') result.aio = value;
        else if (value !== 'native') throw new BlockError('ENOTSUP', `aio=${value} is not supported by this block layer`, { field: key });
        break;
      default: {
        if (!Object.hasOwn(ACCEPTED, key)) throw new BlockError('EINVAL', `Invalid parameter '${key}'`, { field: key });
        const ok = ACCEPTED[key];
        if (ok && !ok(value)) {
          throw new BlockError('ENOTSUP', `${key}=${value} is not supported by this block layer`, { field: key });
        }
      }
    }
  }
  if (group === '') throw new BlockError('EINVAL', `${spelledGroup(values)}: must not be empty`, { field: spelledGroup(values) });
  if (Object.keys(limits).length > 0 || group !== undefined) {
    validateSpelled(limits, spelling, (f) => `throttling.${toQapiName(f)}`);
    result.throttle = group === undefined ? limits : { ...limits, group };
  }
  return result;
}

const spelledGroup = (values: Map<string, string>) => (values.has('group') ? 'group' : 'throttling.group');

/** Parses a -drive string into drive options: `{ id, driver: format, file: { driver: 'file', filename }, readOnly, rerror, werror, throttle }`. */
export function driveStringToOptions(input: string, options: { defaultFormat?: string } = {}): DriveOptions {
  expectString(input, 'input');
  expectRecord(options, 'options');
  if (options.defaultFormat !== undefined) expectString(options.defaultFormat, 'defaultFormat');
  const p = parseDriveString(input);
  if (p.filename === undefined) throw new BlockError('EINVAL', `file: required`, { field: 'file' });
  const file = { driver: 'file', filename: p.filename, ...(p.aio !== undefined ? { aio: p.aio } : {}) };
  const out: DriveOptions = { driver: p.format ?? options.defaultFormat ?? 'raw', file };
  if (p.id !== undefined) out.id = p.id;
  if (p.readOnly !== undefined) out.readOnly = p.readOnly;
  if (p.rerror !== undefined) out.rerror = p.rerror;
  if (p.werror !== undefined) out.werror = p.werror;
  if (p.throttle !== undefined) out.throttle = p.throttle;
  return out;
}

/** Sets `aio` on the file node of a node tree (the root itself, or its `file` child). */
export function withAio<T extends Record<string, unknown>>(options: T, aio: 'threads' | 'io_uring' | undefined): T {
  if (aio === undefined) return options;
  if (options.driver === 'file') return { ...options, aio };
  const file = options.file as Record<string, unknown> | undefined;
  if (file?.driver === 'file') return { ...options, file: { ...file, aio } };
  return options;
}

/**
 * Writes limits back as a -drive string fragment, with the `throttling.*` names
 * (`throttling.iops-total=100,…`) or, with `legacy: true`, the short names where one exists
 * (`iops=100,…,throttling.iops-total-max-length=60`). Commas in the group are doubled.
 * `rerror`/`werror`, if given, are written first (`rerror=stop,werror=enospc,…`).
 */
export function toDriveString(throttle: ThrottleOptions, options: { legacy?: boolean; rerror?: ErrorAction; werror?: ErrorAction } = {}): string {
  expectLimits(throttle, 'throttle', true);
  expectRecord(options, 'options');
  const parts: string[] = [];
  if (options.rerror !== undefined) parts.push(`rerror=${parseDriveErrorAction(expectString(options.rerror, 'rerror'), 'read')}`);
  if (options.werror !== undefined) parts.push(`werror=${parseDriveErrorAction(expectString(options.werror, 'werror'), 'write')}`);
  for (const [k, v] of Object.entries(throttle)) {
    if (v === undefined) continue;
    if (k === 'group') parts.push(`${options.legacy ? 'group' : 'throttling.group'}=${String(v).replaceAll(',', ',,')}`);
    else if (options.legacy && !k.endsWith('Length')) parts.push(`${toQmpName(k)}=${v}`);
    else parts.push(`throttling.${toQapiName(k)}=${v}`);
  }
  return parts.join(',');
}
