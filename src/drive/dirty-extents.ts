// Walking a bitmap's dirty extents as an async iterator: each step asks the bitmap anew from
// where the last extent ended, so writes, clears and merges meanwhile are seen and never break
// the walk (no iterator over the bitmap's pages is held across an await).
import { BlockError } from '../errors.js';
import { canceledError } from './args.js';
import type { DirtyBitmap, DirtyExtent } from '../node/dirty-bitmap.js';

/** Where to walk and how to stop. */
export interface DirtyExtentsOptions {
  /** First byte of the range walked (default 0). */
  offset?: number;
  /** Bytes walked from `offset` (default to the end of the disk). */
  length?: number;
  /** Stops the walk: the next step rejects with ECANCELED and the signal's reason as `cause`. */
  signal?: AbortSignal;
}

/** The dirty extents of `bitmap` within the range, in order, merged into maximal runs. */
export async function* dirtyExtents(bitmap: DirtyBitmap, node: string, options: DirtyExtentsOptions = {}): AsyncGenerator<DirtyExtent, void, undefined> {
  const { offset = 0, signal } = options;
  const length = options.length ?? Math.max(0, bitmap.size - offset);
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > bitmap.size) {
    throw new BlockError('EINVAL', `dirty-extents: range ${String(offset)}+${String(length)} is outside the disk (${bitmap.size} bytes)`, { node, field: 'offset', offset, length });
  }
  bitmap.check('read');
  const end = offset + length;
  for (let pos = offset; pos < end; ) {
    if (signal?.aborted) throw canceledError('dirty-extents', pos, signal.reason, node);
    const extent = bitmap.nextDirtyExtent(pos, end);
    if (extent === null) return;
    yield extent;
    pos = extent.offset + extent.length;
  }
}
