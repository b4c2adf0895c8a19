/** Checks of the arguments a caller gives to a drive's entry points (shared by the drive and its streams). */

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
