// The extents of one BLOCK_STATUS chunk, kept in wire form as they are found (QEMU's
// NBDExtentArray): neighbours with the same flags merge, a full array takes no more. The
// descriptors are stored big-endian straight into the buffer the chunk goes out in, behind room
// for its header, so a frame is the header's 24 bytes written and no copy. The buffer comes from
// a pool in a few size classes; the frame takes it away and it goes back once written.
import * as P from '../drivers/nbd/protocol.js';
import type { BufferPool } from './buffer-pool.js';
import type { ServerRequest } from './request.js';

/** Extents in one chunk, at most (QEMU NBD_MAX_BLOCK_STATUS_EXTENTS: 1 MiB of descriptors). */
export const MAX_EXTENTS = (1024 * 1024) / 8;
const MAX_U32 = 0xffffffff;
/** Chunk header and context id in front of the descriptors. */
const HEAD = P.STRUCTURED_REPLY_HEADER_SIZE + 4;
/** Descriptors the smallest buffer holds; buffers hold a power of two of them, up to MAX_EXTENTS. */
const MIN_CAPACITY = 64;

/** Bytes of a buffer that holds `capacity` descriptors (one of few sizes, so that a pool of exact sizes serves them). */
function bytesFor(capacity: number): number {
  return HEAD + 8 * capacity;
}

export class ExtentArray {
  /** The buffer being filled (header room, then descriptors), or null before the first reset and after a frame took it. */
  private buf: Buffer | null = null;
  private view: DataView | null = null;
  /** Descriptors `buf` holds room for. */
  private capacity = 0;
  /** Capacity to start with: what the last request needed (requests of one client look alike). */
  private wanted = MIN_CAPACITY;
  private max = MAX_EXTENTS;
  /** Descriptors held. */
  count = 0;
  private lastFlags = -1;
  private lastLength = 0;
  /**
   * The whole buffer behind the last {@link frame}, now the caller's: given back to the pool
   * once the frame has been written (it is never reused by this array).
   */
  framed: Buffer | null = null;

  /** @param pool Where buffers come from (and where their owners give them back); without one, each is allocated. */
  constructor(private readonly pool: BufferPool | null = null) {}

  /** Extents the current request takes at most (1 for REQ_ONE). */
  get limit(): number {
    return this.max;
  }

  /** Empties the array for a request that takes at most `max` extents (1 for REQ_ONE). */
  reset(max: number): void {
    this.max = max;
    this.count = 0;
    this.lastFlags = -1;
    this.lastLength = 0;
    this.framed = null;
    let capacity = this.wanted;
    while (capacity > MIN_CAPACITY && capacity >= 2 * max) capacity >>>= 1;
    if (this.buf === null || this.capacity !== capacity) this.take(capacity);
  }

  /**
   * Adds `length` bytes with `flags`: merged into the last extent when the flags match and the sum
   * fits 32 bits. False (nothing added) when a new extent is needed and the array is full.
   */
  add(length: number, flags: number): boolean {
    if (length === 0) return true;
    if (flags === this.lastFlags && this.lastLength + length <= MAX_U32) {
      this.lastLength += length;
      (this.view as DataView).setUint32(HEAD + 8 * (this.count - 1), this.lastLength);
      return true;
    }
    if (this.count >= this.max) return false;
    if (this.count === this.capacity) this.grow();
    const view = this.view as DataView;
    const at = HEAD + 8 * this.count;
    view.setUint32(at, length);
    view.setUint32(at + 4, flags);
    this.count++;
    this.lastFlags = flags;
    this.lastLength = length;
    return true;
  }

  /** The descriptors held, in wire form (a view of the array's buffer: valid until the next reset or frame). */
  descriptors(): Uint8Array {
    return (this.buf as Buffer).subarray(HEAD, HEAD + 8 * this.count);
  }

  /**
   * Makes the array hold `count` descriptors copied from `wire` (what {@link descriptors} gave for
   * the same request): no more than the request takes, as a reset left it.
   */
  setDescriptors(wire: Uint8Array, count: number): void {
    if (this.count !== 0 || count > this.max || wire.byteLength !== 8 * count) throw new Error('extent array: descriptors do not fit this request');
    if (count === 0) return;
    let capacity = this.capacity;
    while (capacity < count) capacity = Math.min(2 * capacity, MAX_EXTENTS);
    if (capacity !== this.capacity) {
      this.take(capacity);
      this.wanted = capacity;
    }
    const b = this.buf as Buffer;
    b.set(wire, HEAD);
    this.count = count;
    const at = HEAD + 8 * (count - 1);
    this.lastLength = b.readUInt32BE(at);
    this.lastFlags = b.readUInt32BE(at + 4);
  }

  /**
   * The NBD_REPLY_TYPE_BLOCK_STATUS chunk of these extents for `contextId`. The frame lies in the
   * array's buffer, which goes with it ({@link framed}); the next reset starts another.
   */
  frame(req: ServerRequest, done: boolean, contextId: number): Buffer {
    const b = this.buf;
    if (b === null) throw new Error('extent array: framed already (reset it first)');
    const view = this.view as DataView;
    const bytes = 8 * this.count;
    view.setUint32(0, P.NBD_STRUCTURED_REPLY_MAGIC);
    view.setUint16(4, done ? P.NBD_REPLY_FLAG_DONE : 0);
    view.setUint16(6, P.NBD_REPLY_TYPE_BLOCK_STATUS);
    view.setUint32(8, req.cookieHigh);
    view.setUint32(12, req.cookieLow);
    view.setUint32(16, 4 + bytes);
    view.setUint32(20, contextId);
    this.framed = b;
    this.buf = null;
    this.view = null;
    return b.subarray(0, HEAD + bytes);
  }

  /** A buffer for `capacity` descriptors (the one held, if any, goes back to the pool: nothing else references it). */
  private take(capacity: number): void {
    if (this.buf !== null) this.pool?.give(this.buf);
    const size = bytesFor(capacity);
    const b = this.pool !== null ? this.pool.take(size) : Buffer.allocUnsafe(size);
    this.buf = b;
    this.view = new DataView(b.buffer, b.byteOffset, size);
    this.capacity = capacity;
  }

  private grow(): void {
    const old = this.buf as Buffer;
    const used = HEAD + 8 * this.count;
    const capacity = Math.min(2 * this.capacity, MAX_EXTENTS);
    const size = bytesFor(capacity);
    const b = this.pool !== null ? this.pool.take(size) : Buffer.allocUnsafe(size);
    old.copy(b, 0, 0, used);
    this.pool?.give(old);
    this.buf = b;
    this.view = new DataView(b.buffer, b.byteOffset, size);
    this.capacity = capacity;
    this.wanted = capacity;
  }
}
