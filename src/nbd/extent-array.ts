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
  /** Descriptors (length, flags) from byte 0; grows by doubling up to what `max` needs. */
  private buf = Buffer.allocUnsafeSlow(8 * 64);
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
      this.buf.writeUInt32BE(this.lastLength, 8 * (this.count - 1));
      return true;
    }
    if (this.count >= this.max) return false;
    const at = 8 * this.count;
    if (at + 8 > this.buf.byteLength) this.grow();
    this.buf.writeUInt32BE(length, at);
    this.buf.writeUInt32BE(flags, at + 4);
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
    this.buf.copy(b, HEAD, 0, bytes);
    return b;
  }

  private grow(): void {
    const bigger = Buffer.allocUnsafeSlow(Math.min(2 * this.buf.byteLength, 8 * MAX_EXTENTS));
    this.buf.copy(bigger, 0, 0, 8 * this.count);
    this.buf = bigger;
  }
}
