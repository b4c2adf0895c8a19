/** One range fetched (or being fetched) past what its read asked for. */
export interface CachedRange {
  offset: number;
  length: number;
  /** Settles with the range's bytes; rejects if the fetch failed. */
  data: Promise<Uint8Array>;
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
