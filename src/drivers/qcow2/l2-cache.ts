type Reader = (offset: number, length: number) => Promise<Uint8Array>;

interface Entry {
  load: Promise<Buffer>;
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
      this.tables.delete(offset);
      this.tables.set(offset, hit);
      return hit.load;
    }
    const load = this.read(offset, this.cs).then((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    const entry: Entry = { load, dirty: false };
    load.catch(() => {
      if (this.tables.get(offset) === entry) this.tables.delete(offset);
    });
    this.tables.set(offset, entry);
    this.evict(offset);
    return load;
  }

  /** Records that `table` (the contents of the table at `offset`) changed and must be written back. */
  markDirty(offset: number, table: Buffer): void {
    const e = this.tables.get(offset);
    if (e?.dirty) return;
    if (e) this.tables.delete(offset);
    // Re-inserted if a read evicted it meanwhile: this buffer is the one that counts.
    this.tables.set(offset, { load: Promise.resolve(table), dirty: true });
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
