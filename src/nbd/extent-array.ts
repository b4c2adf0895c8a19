// The extents of one BLOCK_STATUS chunk, kept in wire form as they are found (QEMU's
// NBDExtentArray): neighbours with the same flags merge, a full array takes no more. Reused
// across requests, so the hot path allocates only the reply frame.
import * as P from '../drivers/nbd/protocol.js';
import type { ServerRequest } from './request.js';

/** Extents in one chunk, at most (QEMU NBD_MAX_BLOCK_STATUS_EXTENTS: 1 MiB of descriptors). */
export const MAX_EXTENTS = (1024 * 1024) / 8;
const MAX_U32 = 0xffffffff;
/** Chunk header and context id in front of the descriptors. */
const HEAD = P.STRUCTURED_REPLY_HEADER_SIZE + 4;

export class ExtentArray {
  /** Descriptors as (length, flags) pairs in native order; grows by doubling up to what `max` needs. */
  private pairs = new Uint32Array(2 * 64);
  private max = MAX_EXTENTS;
  /** Descriptors held. */
  count = 0;
  private lastFlags = -1;
  private lastLength = 0;

  /** Empties the array for a request that takes at most `max` extents (1 for REQ_ONE). */
  reset(max: number): void {
    this.max = max;
    this.count = 0;
    this.lastFlags = -1;
    this.lastLength = 0;
  }

  /**
   * Adds `length` bytes with `flags`: merged into the last extent when the flags match and the sum
   * fits 32 bits. False (nothing added) when a new extent is needed and the array is full.
   */
  add(length: number, flags: number): boolean {
    if (length === 0) return true;
    if (flags === this.lastFlags && this.lastLength + length <= MAX_U32) {
      this.lastLength += length;
      this.pairs[2 * (this.count - 1)] = this.lastLength;
      return true;
    }
    if (this.count >= this.max) return false;
    const at = 2 * this.count;
    if (at + 2 > this.pairs.length) this.grow();
    this.pairs[at] = length;
    this.pairs[at + 1] = flags;
    this.count++;
    this.lastFlags = flags;
    this.lastLength = length;
    return true;
  }

  /** The NBD_REPLY_TYPE_BLOCK_STATUS chunk of these extents for `contextId`. */
  frame(req: ServerRequest, done: boolean, contextId: number): Buffer {
    const bytes = 8 * this.count;
    const b = Buffer.allocUnsafe(HEAD + bytes);
    b.writeUInt32BE(P.NBD_STRUCTURED_REPLY_MAGIC, 0);
    b.writeUInt16BE(done ? P.NBD_REPLY_FLAG_DONE : 0, 4);
    b.writeUInt16BE(P.NBD_REPLY_TYPE_BLOCK_STATUS, 6);
    b.writeUInt32BE(req.cookieHigh, 8);
    b.writeUInt32BE(req.cookieLow, 12);
    b.writeUInt32BE(4 + bytes, 16);
    b.writeUInt32BE(contextId, 20);
    // Big-endian stores through a DataView: one byte-swapped 32-bit store per value, not four byte stores.
    const view = new DataView(b.buffer, b.byteOffset + HEAD, bytes);
    const pairs = this.pairs;
    for (let i = 0, n = 2 * this.count; i < n; i++) view.setUint32(4 * i, pairs[i] as number);
    return b;
  }

  private grow(): void {
    const bigger = new Uint32Array(Math.min(2 * this.pairs.length, 2 * MAX_EXTENTS));
    bigger.set(this.pairs.subarray(0, 2 * this.count));
    this.pairs = bigger;
  }
}
