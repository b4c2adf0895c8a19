// NBD_CMD_BLOCK_STATUS per metadata context, shaped as QEMU's server shapes it: each context's
// extents from the request offset on, neighbours with equal flags merged, until the range is
// covered or the array is full (one extent with REQ_ONE).
import type { Drive } from '../drive.js';
import * as P from '../drivers/nbd/protocol.js';
import { BlockError } from '../errors.js';
import type { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { ExtentArray } from './extent-array.js';
import { NBD_STATE_DIRTY } from './meta-contexts.js';

/**
 * base:allocation (`depth` false: HOLE and ZERO flags) or qemu:allocation-depth (`depth` true:
 * 0 unallocated, 1 allocated in the exported node, 2 and more deeper in its backing chain).
 */
export async function allocationToExtents(drive: Drive, offset: number, length: number, ea: ExtentArray, depth: boolean): Promise<void> {
  const end = offset + length;
  for (let pos = offset; pos < end; ) {
    const s = await drive.blockStatus(pos, end - pos);
    if (!(s.length > 0)) throw new BlockError('EIO', `block status at ${pos}: empty extent`, { offset: pos });
    const n = Math.min(s.length, end - pos);
    const flags = depth ? (s.allocated ? s.depth + 1 : 0) : P.allocationFlags(s);
    if (!ea.add(n, flags)) return;
    pos += n;
  }
}

/** qemu:dirty-bitmap:NAME: dirty runs have flag 1 (NBD_STATE_DIRTY), clean ones 0. Synchronous. */
export function bitmapToExtents(bitmap: DirtyBitmap, offset: number, length: number, ea: ExtentArray): void {
  const end = offset + length;
  const granularity = bitmap.granularity;
  const set = bitmap.granules;
  const limit = Math.ceil(end / granularity);
  const first = Math.floor(offset / granularity);
  // Runs alternate: only the first run's dirtiness is looked up, then each run ends where the next begins.
  let dirty = first < set.size && set.has(first);
  for (let pos = offset, g = first; pos < end; dirty = !dirty) {
    // Past the bitmap's end (a node grown since it was made): nothing recorded there.
    if (g >= set.size) {
      ea.add(end - pos, 0);
      return;
    }
    const next = set.next(g + 1, !dirty, limit);
    const stop = Math.min(end, next * granularity);
    if (!ea.add(stop - pos, dirty ? NBD_STATE_DIRTY : 0)) return;
    pos = stop;
    g = next;
  }
}
