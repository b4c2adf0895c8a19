// The BLOCK_STATUS extents of a dirty bitmap, remembered per requested range for as long as the
// bitmap does not change (GranuleSet.version): `nbdinfo --map` opens a connection per map and
// asks for the same ranges each time, and a bitmap that nothing writes to answers them the same.
// A hit copies the wire-form descriptors of the last walk instead of walking again; the bytes on
// the wire are the walk's (the walk depends on the bits, the set's size, the granularity and the
// request: offset, length and the extent limit, which is all the key holds).
import type { DirtyBitmap } from '../node/dirty-bitmap.js';
import { bitmapToExtents } from './block-status.js';
import type { ExtentArray } from './extent-array.js';

/** Bytes of descriptors kept per bitmap, at most: past it the oldest ranges are forgotten. */
export const MAX_KEPT_BYTES = 4 * 1024 * 1024;
/** Ranges kept per bitmap, at most (each costs a map entry and a buffer however small). */
export const MAX_KEPT_RANGES = 1024;

/** The answer to one range: the request it answers and its descriptors in wire form. */
interface Kept {
  length: number;
  limit: number;
  wire: Buffer;
  count: number;
}

/** What is kept for one bitmap: answers by request offset, valid while the bits are at `version`. */
class BitmapReplies {
  version = -1;
  readonly byOffset = new Map<number, Kept>();
  bytes = 0;

  /** Forgets every range (the bits changed). */
  reset(version: number): void {
    this.version = version;
    this.byOffset.clear();
    this.bytes = 0;
  }

  keep(offset: number, kept: Kept): void {
    const old = this.byOffset.get(offset);
    if (old !== undefined) {
      this.bytes -= old.wire.byteLength;
      this.byOffset.delete(offset);
    }
    // Oldest first out (a map iterates in insertion order).
    while (this.byOffset.size > 0 && (this.byOffset.size >= MAX_KEPT_RANGES || this.bytes + kept.wire.byteLength > MAX_KEPT_BYTES)) {
      const first = this.byOffset.keys().next().value as number;
      this.bytes -= (this.byOffset.get(first) as Kept).wire.byteLength;
      this.byOffset.delete(first);
    }
    this.byOffset.set(offset, kept);
    this.bytes += kept.wire.byteLength;
  }
}

const kept = new WeakMap<DirtyBitmap, BitmapReplies>();

/**
 * {@link bitmapToExtents} into `ea` (reset for the request, empty), answered from the last walk
 * of the same range while the bitmap has not changed since. Synchronous, like the walk.
 */
export function bitmapStatus(bitmap: DirtyBitmap, offset: number, length: number, ea: ExtentArray): void {
  const version = bitmap.granules.version;
  let replies = kept.get(bitmap);
  if (replies === undefined) {
    replies = new BitmapReplies();
    kept.set(bitmap, replies);
  }
  if (replies.version !== version) replies.reset(version);
  const limit = ea.limit;
  const hit = replies.byOffset.get(offset);
  if (hit !== undefined && hit.length === length && hit.limit === limit) {
    ea.setDescriptors(hit.wire, hit.count);
    return;
  }
  bitmapToExtents(bitmap, offset, length, ea);
  const wire = ea.descriptors();
  if (wire.byteLength <= MAX_KEPT_BYTES) replies.keep(offset, { length, limit, wire: Buffer.from(wire), count: ea.count });
}

/** Ranges and descriptor bytes kept for `bitmap` now (for tests and figures). */
export function keptOf(bitmap: DirtyBitmap): { ranges: number; bytes: number } {
  const replies = kept.get(bitmap);
  return replies === undefined ? { ranges: 0, bytes: 0 } : { ranges: replies.byOffset.size, bytes: replies.bytes };
}
