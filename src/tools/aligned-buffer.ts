import { loadKoffi } from '../platform/koffi-load.js';

/**
 * For each buffer handed out by {@link alignedBuffer}: its ArrayBuffer and the byte offset in
 * it where aligned memory starts. A view of it is aligned to `align` when its byteOffset is
 * this start plus a multiple of `align` (the memory behind an ArrayBuffer never moves).
 */
const alignedStart = new WeakMap<ArrayBufferLike, number>();

/**
 * A buffer of `bytes` whose memory address is a multiple of `align` (a power of two), as
 * O_DIRECT wants: over-allocated by `align` and cut where the address is aligned. koffi tells
 * the address; without koffi, undefined (the caller writes through the page cache instead).
 */
export function alignedBuffer(bytes: number, align: number): Buffer | undefined {
  let koffi: ReturnType<typeof loadKoffi>;
  try {
    koffi = loadKoffi();
  } catch {
    return undefined;
  }
  const whole = Buffer.allocUnsafeSlow(bytes + align);
  const shift = (align - Number(koffi.address(whole) % BigInt(align))) % align;
  alignedStart.set(whole.buffer, shift);
  return whole.subarray(shift, shift + bytes);
}

/** Whether `data` starts at an address that is a multiple of `align`: true only for views of {@link alignedBuffer}'s buffers with the same or a coarser alignment. */
export function isAligned(data: Uint8Array, align: number): boolean {
  const start = alignedStart.get(data.buffer);
  return start !== undefined && (data.byteOffset - start) % align === 0;
}
