/**
 * Shape checks at the entry points of the option parsers: a caller passing `null`, an array
 * or a number where an object (or a string) belongs gets an EINVAL naming the parameter,
 * never a TypeError from deep inside a parser.
 */
import { BlockError } from '../errors.js';
import { throttleLimitsSchema, throttleOptionsSchema } from '../throttle/limits.js';
import { parseOptions } from './zod-error.js';

/** What a value is, in a message: `null`, `an array`, `a number`, … */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value === undefined) return 'undefined';
  const t = typeof value;
  return `${t === 'object' ? 'an' : 'a'} ${t}`;
}

/** True for a non-null, non-array object. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `value` if it is an object (not null, not an array); EINVAL naming `field` otherwise. */
export function expectRecord(value: unknown, field: string): Record<string, unknown> {
  if (!isRecord(value)) throw new BlockError('EINVAL', `${field}: must be an object, got ${kindOf(value)}`, { field });
  return value;
}

/** `value` if it is a string; EINVAL naming `field` otherwise. */
export function expectString(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new BlockError('EINVAL', `${field}: must be a string, got ${kindOf(value)}`, { field });
  return value;
}

/**
 * Checks limits handed to a writer (`toDriveString`, `toQapiLimits`, …): an object of known
 * limit names with whole numbers (and `group` if `withGroup`). Refused with EINVAL naming the
 * field (`throttle.iopps: unknown option`); QEMU's rules are not applied, writers write what they get.
 */
export function expectLimits(value: unknown, field: string, withGroup: boolean): void {
  expectRecord(value, field);
  parseOptions(withGroup ? throttleOptionsSchema : throttleLimitsSchema, value, field);
}

/** `value` if it is an object with a method `method` (a structural stand-in for a class); EINVAL otherwise. */
export function expectWith<K extends string>(value: unknown, field: string, method: K): Record<K, (...args: never[]) => unknown> {
  if (!isRecord(value) || typeof value[method] !== 'function') {
    throw new BlockError('EINVAL', `${field}: must be an object with a ${method}() method, got ${kindOf(value)}`, { field });
  }
  return value as Record<K, (...args: never[]) => unknown>;
}
