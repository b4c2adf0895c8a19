// The chunks of one connection's BLOCK_STATUS replies: one per selected meta context, in QEMU's
// order (base:allocation, qemu:allocation-depth, the bitmaps), the last flagged DONE. Each chunk
// lies in a pooled buffer that goes back to the pool once written; the extent arrays are kept
// for the connection's next request.
import type { Drive } from '../drive.js';
import * as P from '../drivers/nbd/protocol.js';
import type { BufferPool } from './buffer-pool.js';
import { allocationToExtents } from './block-status.js';
import { bitmapStatus } from './bitmap-replies.js';
import { ExtentArray, MAX_EXTENTS } from './extent-array.js';
import { ALLOCATION_DEPTH_ID, BASE_ALLOCATION_ID, type MetaSelection } from './meta-contexts.js';
import type { ServerRequest } from './request.js';

/** Sends one chunk (a frame in the pooled buffer `pooled`). */
export type SendChunk = (frame: Uint8Array, pooled: Buffer | null) => void;

/** Extents a request may get per chunk: one with NBD_CMD_FLAG_REQ_ONE. */
function maxExtents(req: ServerRequest): number {
  return req.flags & P.NBD_CMD_FLAG_REQ_ONE ? 1 : MAX_EXTENTS;
}

export class StatusChunks {
  private readonly spare: ExtentArray[] = [];

  constructor(
    private readonly pool: BufferPool,
    private readonly send: SendChunk,
  ) {}

  /** Every selected context's chunk. The drive's answers are all gathered before any chunk is sent, so a failure is one error chunk alone. */
  async all(req: ServerRequest, drive: Drive, meta: MetaSelection): Promise<void> {
    const max = maxExtents(req);
    const { offset, length } = req;
    const base = meta.allocation ? this.take(max) : null;
    const depth = meta.depth ? this.take(max) : null;
    try {
      if (base !== null) await allocationToExtents(drive, offset, length, base, false);
      if (depth !== null) await allocationToExtents(drive, offset, length, depth, true);
      let left = meta.count;
      if (base !== null) this.send(base.frame(req, --left === 0, BASE_ALLOCATION_ID), base.framed);
      if (depth !== null) this.send(depth.frame(req, --left === 0, ALLOCATION_DEPTH_ID), depth.framed);
      this.bitmaps(req, meta, max, left);
    } finally {
      if (base !== null) this.spare.push(base);
      if (depth !== null) this.spare.push(depth);
    }
  }

  /** The chunks when only bitmaps are selected: synchronous, with no promise or turn of its own (nbdinfo --map asks for one range after another). */
  bitmapsOnly(req: ServerRequest, meta: MetaSelection): void {
    this.bitmaps(req, meta, maxExtents(req), meta.count);
  }

  /** The selected bitmaps' chunks, the last `left` of the request's, read and sent with no await between: the bits as they are now. */
  private bitmaps(req: ServerRequest, meta: MetaSelection, max: number, left: number): void {
    const bitmaps = meta.selectedBitmaps;
    if (bitmaps.length === 0) return;
    const ea = this.take(max);
    for (let i = 0; i < bitmaps.length; i++) {
      const { id, bitmap } = bitmaps[i] as (typeof bitmaps)[number];
      ea.reset(max);
      bitmapStatus(bitmap, req.offset, req.length, ea);
      this.send(ea.frame(req, --left === 0, id), ea.framed);
    }
    this.spare.push(ea);
  }

  private take(max: number): ExtentArray {
    const ea = this.spare.pop() ?? new ExtentArray(this.pool);
    ea.reset(max);
    return ea;
  }
}
