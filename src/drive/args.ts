/** Checks of the arguments a caller gives to a drive's entry points (shared by the drive and its streams). */
import { BlockError, valueText } from '../errors.js';

/** The bytes of a caller's buffer: Uint8Array (Buffer) as is, ArrayBuffer and DataView by bytes; null for anything else. */
export function asBytes(data: unknown): Uint8Array | null {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && data instanceof SharedArrayBuffer)) return new Uint8Array(data);
  if (data instanceof DataView) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/** What a value is, for a message: its class (Uint8Array, Object), `null`, or its type. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (ArrayBuffer.isView(value)) return value.constructor.name;
  return typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value;
}

/** An AbortSignal, or an object that behaves like one (polyfills): anything else would fail later, after the request was counted. */
export function isSignal(signal: unknown): signal is AbortSignal {
  if (signal instanceof AbortSignal) return true;
  if (typeof signal !== 'object' || signal === null) return false;
  const s = signal as Partial<AbortSignal>;
  return typeof s.aborted === 'boolean' && typeof s.addEventListener === 'function' && typeof s.removeEventListener === 'function';
}

/**
 * The one range check of every entry point that takes a range (requests and block status):
 * EINVAL naming the bad field (`offset` or `length`) with the value as the caller gave it,
 * or null when [offset, offset+length) lies inside a drive of `size` bytes. Never throws, whatever the values.
 */
export function rangeError(name: string, offset: unknown, length: unknown, size: number, drive: string, node: string): BlockError | null {
  const context = { node, ...(typeof offset === 'number' ? { offset } : {}), ...(typeof length === 'number' ? { length } : {}) };
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) {
    return new BlockError('EINVAL', `${name}: offset ${valueText(offset)} must be a non-negative safe integer`, { ...context, field: 'offset' });
  }
  if (!Number.isSafeInteger(length) || (length as number) < 0) {
    return new BlockError('EINVAL', `${name}: length ${valueText(length)} must be a non-negative safe integer`, { ...context, field: 'length' });
  }
  if ((offset as number) + (length as number) > size) {
    const field = (offset as number) > size ? 'offset' : 'length';
    return new BlockError('EINVAL', `${name}: range ${offset}+${length} is beyond the end of drive ${drive} (${size} bytes)`, { ...context, field });
  }
  return null;
}

/** ECANCELED for a request whose signal aborted; `reason` (the signal's) becomes the error's `cause`. */
export function canceledError(op: string, offset: number, reason: unknown, node: string): BlockError {
  return new BlockError('ECANCELED', `${op}: request at offset ${offset} was aborted`, { node, offset, cause: reason });
}
