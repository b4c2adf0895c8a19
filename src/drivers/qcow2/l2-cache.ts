type Reader = (offset: number, length: number) => Promise<Uint8Array>;

interface Entry {
  load: Promise<Buffer>;
  /** The table once loaded (what {@link L2Cache.peek} answers without a promise). */
  table: Buffer | undefined;
  dirty: boolean;
}

/**
 * Write-back cache of L2 tables by host offset (QEMU qcow2-cache.c), shared by reads and
 * writes so reads see updates at once. Reads only ever evict clean tables; dirty tables are
 * written back by the writer under its lock, in dependency order (see writer.ts), after which
 * they become evictable.
 */
export class L2Cache {
  private readonly tables = new Map<number, Entry>();
  private dirtyCount = 0;
  /** The table used last: a repeated hit skips the LRU reordering. */
  private mru = -1;
  readonly capacity: number;

  constructor(
    private readonly cs: number,
    private readonly read: Reader,
    capacityBytes: number,
  ) {
    this.capacity = Math.max(2, Math.floor(capacityBytes / cs));
  }

  /** The table at `offset` (loaded from the file on a miss). */
  get(offset: number): Promise<Buffer> {
    const hit = this.tables.get(offset);
    if (hit) {
      this.touch(offset, hit);
      return hit.load;
    }
    const entry: Entry = { load: undefined as unknown as Promise<Buffer>, table: undefined, dirty: false };
    const load = this.read(offset, this.cs).then((b) => {
      entry.table = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
      return entry.table;
    });
    entry.load = load;
    load.catch(() => {
      if (this.tables.get(offset) === entry) this.tables.delete(offset);
    });
    this.tables.set(offset, entry);
    this.mru = offset;
    this.evict(offset);
    return load;
  }

  /** The table at `offset` if it is cached and loaded (no I/O, no promise), else undefined. */
  peek(offset: number): Buffer | undefined {
    const hit = this.tables.get(offset);
    if (hit?.table === undefined) return undefined;
    this.touch(offset, hit);
    return hit.table;
  }

  /** Marks the table at `offset` used last (least recently used tables are evicted first). */
  private touch(offset: number, hit: Entry): void {
    if (offset === this.mru) return;
    this.tables.delete(offset);
    this.tables.set(offset, hit);
    this.mru = offset;
  }

  /** Records that `table` (the contents of the table at `offset`) changed and must be written back. */
  markDirty(offset: number, table: Buffer): void {
    const e = this.tables.get(offset);
    if (e?.dirty) return;
    if (e) this.tables.delete(offset);
    // Re-inserted if a read evicted it meanwhile: this buffer is the one that counts.
    this.tables.set(offset, { load: Promise.resolve(table), table, dirty: true });
    this.mru = offset;
    this.dirtyCount++;
  }

  /** More dirty tables than the cache should hold: the writer should write them back. */
  get overfull(): boolean {
    return this.dirtyCount > this.capacity / 2;
  }

  get hasDirty(): boolean {
    return this.dirtyCount > 0;
  }

  /** Dirty tables with their offsets. */
  async dirtyTables(): Promise<[number, Buffer][]> {
    const out: [number, Buffer][] = [];
    for (const [offset, e] of this.tables) if (e.dirty) out.push([offset, await e.load]);
    return out;
  }

  /** The table at `offset` reached the disk. */
  markClean(offset: number): void {
    const e = this.tables.get(offset);
    if (e?.dirty) {
      e.dirty = false;
      this.dirtyCount--;
    }
    this.evict(-1);
  }

  /** Drops clean tables, least recently used first, down to the capacity. */
  private evict(keep: number): void {
    for (const [offset, e] of this.tables) {
      if (this.tables.size <= this.capacity) return;
      if (!e.dirty && offset !== keep) this.tables.delete(offset);
    }
  }
}
