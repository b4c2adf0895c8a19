// NBD_CMD_BLOCK_STATUS per metadata context, shaped as QEMU's server shapes it: each context's
// extents from the request offset on, neighbours with equal flags merged, until the range is
// covered or the array is full (one extent with REQ_ONE).
import type { Drive } from '../drive.js';
import * as P from '../drivers/nbd/protocol.js';
import { BlockError } from '../errors.js';
import type { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { RunSink } from '../node/granule-set.js';
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

/** Turns the granule runs of a bitmap walk into extents in bytes, clipped to the request. */
class BitmapExtents implements RunSink {
  ea: ExtentArray | null = null;
  granularity = 1;
  /** Bytes covered so far, and the request's end. */
  pos = 0;
  end = 0;
  /** The array took no more: the walk stopped short. */
  full = false;

  run(endGranule: number, member: boolean): boolean {
    const stop = Math.min(this.end, endGranule * this.granularity);
    if (!(this.ea as ExtentArray).add(stop - this.pos, member ? NBD_STATE_DIRTY : 0)) {
      this.full = true;
      return false;
    }
    this.pos = stop;
    return true;
  }
}

/** One for all requests: a walk runs synchronously, start to end. */
const walker = new BitmapExtents();

/** qemu:dirty-bitmap:NAME: dirty runs have flag 1 (NBD_STATE_DIRTY), clean ones 0. Synchronous. */
export function bitmapToExtents(bitmap: DirtyBitmap, offset: number, length: number, ea: ExtentArray): void {
  const end = offset + length;
  const granularity = bitmap.granularity;
  const w = walker;
  w.ea = ea;
  w.granularity = granularity;
  w.pos = offset;
  w.end = end;
  w.full = false;
  bitmap.granules.walkRuns(Math.floor(offset / granularity), Math.ceil(end / granularity), w);
  // Past the bitmap's end (a node grown since it was made): nothing recorded there.
  if (!w.full && w.pos < end) ea.add(end - w.pos, 0);
  w.ea = null;
}
