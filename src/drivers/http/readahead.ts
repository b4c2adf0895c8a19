/** One range fetched (or being fetched) past what its read asked for. */
export interface CachedRange {
  offset: number;
  length: number;
  /** Settles with the range's bytes; rejects if the fetch failed. */
  data: Promise<Uint8Array>;
  /** Fetched ahead of a sequential stream of large reads: read once, whole, by the next read. */
  streamed?: boolean;
  /** Reads waiting for, or copying from, this range. */
  readers?: number;
}

/**
 * The last few read-ahead ranges, most recently used last (QEMU's curl driver keeps a handful of
 * transfer buffers the same way). A read inside a cached or in-flight range waits for it instead of
 * sending its own request, so sequential small reads cost one request per read-ahead window.
 */
export class ReadaheadCache {
  private readonly entries: CachedRange[] = [];

  constructor(private readonly capacity: number) {}

  /** The range holding all of [offset, offset+length), marked most recently used; undefined if none. */
  find(offset: number, length: number): CachedRange | undefined {
    const i = this.entries.findIndex((e) => offset >= e.offset && offset + length <= e.offset + e.length);
    if (i < 0) return undefined;
    const [hit] = this.entries.splice(i, 1);
    this.entries.push(hit);
    return hit;
  }

  /** Adds a range, dropping the least recently used one when full. */
  add(entry: CachedRange): void {
    this.entries.push(entry);
    if (this.entries.length > this.capacity) this.entries.shift();
  }

  /** Drops a range (its fetch failed: the next read must ask again). */
  remove(entry: CachedRange): void {
    const i = this.entries.indexOf(entry);
    if (i >= 0) this.entries.splice(i, 1);
  }

  clear(): void {
    this.entries.length = 0;
  }
}

/** Reads one range of the remote file into a buffer (the http client's read). */
export type RangeReader = (offset: number, buffer: Uint8Array) => Promise<void>;

/** Read-ahead windows kept (and at most in flight) per node. */
export const READAHEAD_SLOTS = 8;

/** Largest read that starts a sequential prefetch (bigger ones already keep the connection busy). */
const MAX_PREFETCH = 4 * 1024 * 1024;
/** Largest read whose range is kept for the next reads; bigger ones go straight into the caller's buffer. */
const MAX_KEPT = MAX_PREFETCH;

/**
 * Reads through a {@link ReadaheadCache}. A read shorter than `readahead` fetches a whole window and
 * keeps it for the next reads. A longer one (up to 4 MiB) is kept too, as QEMU's curl driver serves
 * later reads from the buffers of its last transfers whatever their size: a qcow2 image opened over
 * http reads its header cluster and then its L1 table inside it. A longer read that continues the
 * previous one (a sequential stream, like convert) also starts fetching the next range of the same
 * length, so one request is always on the wire while the caller handles the last one. `readahead` 0
 * turns all of this off: one request per read.
 */
export class ReadaheadReader {
  private readonly cache: ReadaheadCache;
  /** End of the last read, to tell a sequential stream from random reads. */
  private lastEnd = -1;
  /**
   * Buffers of streamed ranges already handed over, for the next ones: a stream of 1 MiB reads
   * would otherwise allocate (and zero) a megabyte per read and keep the garbage collector busy.
   */
  private readonly spare: Uint8Array[] = [];
  private readonly slots: number;

  constructor(
    private readonly fetchRange: RangeReader,
    private readonly size: number,
    private readonly readahead: number,
    slots = READAHEAD_SLOTS,
  ) {
    this.cache = new ReadaheadCache(slots);
    this.slots = slots;
  }

  async read(offset: number, buffer: Uint8Array): Promise<void> {
    const want = buffer.length;
    const sequential = offset === this.lastEnd;
    this.lastEnd = offset + want;
    const hit = this.cache.find(offset, want);
    if (hit === undefined && (this.readahead === 0 || want > MAX_KEPT)) {
      if (sequential) this.prefetch(offset + want, want);
      return this.fetchRange(offset, buffer);
    }
    if (sequential && want >= this.readahead) this.prefetch(offset + want, want);
    const entry = hit ?? this.fetchWindow(offset, Math.max(want, this.readahead), false);
    entry.readers = (entry.readers ?? 0) + 1;
    let data: Uint8Array;
    try {
      data = await entry.data;
    } finally {
      entry.readers--;
    }
    buffer.set(data.subarray(offset - entry.offset, offset - entry.offset + want));
    if (entry.streamed && entry.readers === 0 && offset === entry.offset && want === entry.length) {
      // The stream has taken this range whole and nobody else waits for it: its buffer serves the next one.
      this.cache.remove(entry);
      if (this.spare.length < this.slots) this.spare.push(data);
    }
  }

  /** Starts fetching [offset, offset+length) into the cache unless it is there or past the end. */
  private prefetch(offset: number, length: number): void {
    if (this.readahead === 0 || length > MAX_PREFETCH || offset >= this.size) return;
    if (this.cache.find(offset, Math.min(length, this.size - offset)) !== undefined) return;
    this.fetchWindow(offset, length, true);
  }

  private fetchWindow(offset: number, length: number, streamed: boolean): CachedRange {
    const n = Math.min(this.size - offset, length);
    const data = this.takeSpare(n) ?? new Uint8Array(n);
    const entry: CachedRange = { offset, length: n, data: this.fetchRange(offset, data).then(() => data), streamed, readers: 0 };
    this.cache.add(entry);
    // A failed range must be asked for again by the next read; the error reaches whoever awaits it.
    entry.data.catch(() => this.cache.remove(entry));
    return entry;
  }

  /** A spare buffer of exactly `n` bytes, if there is one. */
  private takeSpare(n: number): Uint8Array | undefined {
    for (let i = this.spare.length - 1; i >= 0; i--) {
      const b = this.spare[i];
      if (b.length !== n) continue;
      this.spare[i] = this.spare[this.spare.length - 1];
      this.spare.pop();
      return b;
    }
    return undefined;
  }

  /** Forgets every cached range (the node closes). */
  clear(): void {
    this.cache.clear();
    this.spare.length = 0;
  }
}
