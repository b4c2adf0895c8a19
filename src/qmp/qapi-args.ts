/**
 * Reading a command's arguments as QEMU's QAPI input visitor does, with its error texts. A
 * `path` names where the object sits inside the arguments (`actions[0].data.`), as QEMU names
 * nested members in its errors.
 */
import { QmpError } from './wire.js';

/** A command's arguments, or an object nested in them. */
export type Args = Record<string, unknown>;

/** QMP's GenericError with QEMU's text. */
export const generic = (desc: string) => new QmpError('GenericError', desc);

/** Refuses arguments a command does not take (QAPI's "Parameter 'x' is unexpected"). */
export function only(args: Args, allowed: readonly string[], path = ''): void {
  for (const key of Object.keys(args)) if (!allowed.includes(key)) throw generic(`Parameter '${path}${key}' is unexpected`);
}

/** A string argument (QAPI's "Parameter 'x' is missing" when required and absent). */
export function str(args: Args, key: string, required: true, path?: string): string;
export function str(args: Args, key: string, required: false, path?: string): string | undefined;
export function str(args: Args, key: string, required: boolean, path = ''): string | undefined {
  const v = args[key];
  if (v === undefined) {
    if (required) throw generic(`Parameter '${path}${key}' is missing`);
    return undefined;
  }
  if (typeof v !== 'string') throw generic(`Invalid parameter type for '${path}${key}', expected: string`);
  return v;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * A QAPI int64 as it comes off the wire: a safe integer, or a bigint (wire.ts parses integers
 * past 2^53 exactly) inside int64; undefined for anything else (QEMU: "expected: integer", also
 * for an integer outside int64, which its parser reads as a double).
 */
export function int64Value(v: unknown): number | bigint | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : undefined;
  if (typeof v === 'bigint') return v >= INT64_MIN && v <= INT64_MAX ? v : undefined;
  return undefined;
}

/**
 * An optional QAPI int64 argument as a number: exact up to 2^53, the nearest double past it
 * (callers that need an exact value check Number.isSafeInteger).
 */
export function optInt(args: Args, key: string, path = ''): number | undefined {
  const v = args[key];
  if (v === undefined) return undefined;
  const n = int64Value(v);
  if (n === undefined) throw generic(`Invalid parameter type for '${path}${key}', expected: integer`);
  return Number(n);
}

/**
 * An optional rate in bytes per second (QAPI int64 `speed`): past 2^53 (8 PiB/s, no limit in
 * effect) it is capped there, as the jobs take safe integers.
 */
export function optSpeed(args: Args, key = 'speed', path = ''): number | undefined {
  const v = optInt(args, key, path);
  return v === undefined ? undefined : Math.min(v, Number.MAX_SAFE_INTEGER);
}

/** An optional boolean argument. */
export function optBool(args: Args, key: string, path = ''): boolean | undefined {
  const v = args[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw generic(`Invalid parameter type for '${path}${key}', expected: boolean`);
  return v;
}

/**
 * An optional uint32 argument (QAPI: a value that is no integer "expects uint64", one out of
 * range "expects uint32_t"; QEMU names only the member there, never its path).
 */
export function optUint32(args: Args, key: string): number | undefined {
  const v = args[key];
  if (v === undefined) return undefined;
  const n = int64Value(v);
  if (n === undefined) throw generic(`Parameter '${key}' expects uint64`);
  if (n < 0 || n > 0xffffffff) throw generic(`Parameter '${key}' expects uint32_t`);
  return Number(n);
}

/** A required array argument. */
export function list(args: Args, key: string, path = ''): unknown[] {
  const v = args[key];
  if (v === undefined) throw generic(`Parameter '${path}${key}' is missing`);
  if (!Array.isArray(v)) throw generic(`Invalid parameter type for '${path}${key}', expected: array`);
  return v;
}

/** `value` as an object (arguments nested at `name`). */
export function dict(value: unknown, name: string): Args {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw generic(`Invalid parameter type for '${name}', expected: object`);
  return value as Args;
}

/** A required object argument. */
export function member(args: Args, key: string, path = ''): Args {
  const v = args[key];
  if (v === undefined) throw generic(`Parameter '${path}${key}' is missing`);
  return dict(v, `${path}${key}`);
}
