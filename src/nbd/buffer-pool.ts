/**
 * Buffers of the request sizes clients actually use, kept for reuse: WRITE payloads and READ
 * replies. A fresh large buffer per request costs more than its copy: the allocation, the GC
 * that external memory pressure triggers, and the page faults of new memory (seen as a 1 MiB
 * write taking milliseconds of main-thread time). Only buffers that nobody references any more
 * come back (a request that failed keeps its buffer out: a driver may still be using pieces of it).
 *
 * Bounded: at most `limit` idle bytes in all, so a client cycling through odd sizes only makes
 * the pool drop buffers, never grow. Buffers in use are bounded by the server's memory budget.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private idle = 0;

  constructor(private readonly limit: number) {}

  /** A buffer of exactly `size` bytes (contents undefined). */
  take(size: number): Buffer {
    const list = this.free.get(size);
    const b = list?.pop();
    if (b === undefined) return Buffer.allocUnsafeSlow(size);
    this.idle -= size;
    return b;
  }

  /** Gives back a buffer from {@link take} that nothing references any more. */
  give(b: Buffer): void {
    const size = b.byteLength;
    if (size === 0 || this.idle + size > this.limit) return;
    let list = this.free.get(size);
    if (list === undefined) {
      // Sizes come and go with the clients: drop the empty lists rather than keep every size ever seen.
      if (this.free.size >= MAX_SIZES) this.prune();
      list = [];
      this.free.set(size, list);
    }
    list.push(b);
    this.idle += size;
  }

  /** Bytes held idle now. */
  get idleBytes(): number {
    return this.idle;
  }

  private prune(): void {
    for (const [size, list] of this.free) if (list.length === 0) this.free.delete(size);
    if (this.free.size < MAX_SIZES) return;
    this.free.clear();
    this.idle = 0;
  }
}

/** Distinct sizes kept at once. */
const MAX_SIZES = 32;
