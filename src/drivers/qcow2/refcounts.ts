import { BlockError } from '../../errors.js';
import { entryOffset } from './entries.js';
import { extendFreeRun, extendFreeRunFree, type FreeRun, newFreeRun } from './free-run.js';
import * as L from './limits.js';
import { type MetadataOverlap, OL_REFCOUNT_BLOCK } from './overlap.js';
import { settleAll } from './settle.js';
import { entriesPerBlock, maxRefcount, readEntry, refcountTableEntryError, writeEntry } from './refcount-entries.js';

/** Raw access to the image file for metadata. */
export interface MetadataIO {
  /** Reads `length` bytes (zeros past the end of the file). */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Writes, growing the file when needed. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** fsync of the image file. */
  sync(): Promise<void>;
}

interface Block {
  offset: number;
  data: Uint8Array;
  dirty: boolean;
}

/** Clusters [first, last] under an in-flight data read. */
export interface ReadPin {
  first: number;
  last: number;
}

/**
 * The refcount table and refcount blocks of an image (QEMU qcow2-refcount.c), with a bounded
 * write-back cache of blocks. Every method runs under the driver's metadata lock.
 *
 * Ordering rules kept here: refcount blocks only ever reach the disk with increments or with
 * decrements whose references are already gone from the disk (see {@link release}), so writing
 * a block back is always safe; a new block reaches the disk before the table entry that points
 * to it; a larger table is written and synced before the header points to it.
 */
export class Refcounts {
  private readonly cs: number;
  private readonly perBlock: number;
  private readonly order: number;
  private readonly max: number;
  /** Host offset of every refcount block by index (0: none); may run past the table on disk. */
  private readonly table: number[] = [];
  private readonly tableDirty = new Set<number>();
  private tableOffset: number;
  private diskEntries: number;
  private readonly blocks = new Map<number, Block>();
  private readonly capacity: number;
  /** Clusters whose refcount drops once the tables that dropped them are on disk (applied by {@link applyReleases}). */
  private released: Float64Array = new Float64Array(256);
  private releasedCount = 0;
  /** The list {@link applyReleases} last emptied, reused by the next call (a typed array: a deleted snapshot releases one entry per cluster of the image, and a growing JS array is slow to push into). */
  private spare: Float64Array | undefined = new Float64Array(256);
  /**
   * Host byte ranges that data reads are reading right now. A released cluster inside one keeps
   * its reference until the read is done: reused early, the read would return (or a later
   * allocation's data would be mixed with) another guest cluster's bytes.
   */
  private readonly reading = new Set<ReadPin>();
  /** First cluster that may be free: never 0, the header's cluster (free only in a corrupt image). */
  private cursor = 1;
  /** The free-cluster search's state and its view of one refcount block (reused: no allocation per search). */
  private readonly run = newFreeRun(0);
  private readonly blockView = {
    data: new Uint8Array(0) as Uint8Array,
    base: 0,
    order: 0,
    get(cluster: number): number {
      return readEntry(this.data, cluster - this.base, this.order);
    },
  };
  /** End (bytes) of the highest cluster ever allocated or present: nothing past it was ever written. */
  private highWater: number;
  /** The overlap check (overlap.ts): no cluster holding metadata is handed out, no block read from one. */
  guard: MetadataOverlap | undefined;

  constructor(
    private readonly io: MetadataIO,
    clusterBits: number,
    refcountOrder: number,
    tableOffset: number,
    tableClusters: number,
    tableBytes: Uint8Array,
    fileLength: number,
    cacheBytes: number,
    /** Points the header at a new refcount table (written and synced by the caller of the callback). */
    private readonly relocate: (offset: number, clusters: number) => Promise<void>,
  ) {
    this.cs = 2 ** clusterBits;
    this.order = refcountOrder;
    this.perBlock = entriesPerBlock(this.cs, refcountOrder);
    this.max = maxRefcount(refcountOrder);
    this.tableOffset = tableOffset;
    this.diskEntries = (tableClusters * this.cs) / 8;
    const v = Buffer.from(tableBytes.buffer, tableBytes.byteOffset, tableBytes.byteLength);
    for (let i = 0; i < this.diskEntries; i++) {
      const at = i * 8;
      this.table.push(at + 8 <= v.length ? entryOffset(v.readUInt32BE(at), v.readUInt32BE(at + 4)) : 0);
    }
    this.capacity = Math.max(4, Math.floor(cacheBytes / this.cs));
    this.highWater = Math.ceil(fileLength / this.cs) * this.cs;
  }

  /** End of the highest allocated cluster (bytes): clusters allocated at or past it read as zeros until written. */
  get end(): number {
    return this.highWater;
  }

  /** Host offset of every refcount block by index (0: none). */
  get blockOffsets(): readonly number[] { return this.table; }

  /** Whether cached blocks or table entries wait to be written. */
  get dirty(): boolean {
    if (this.tableDirty.size > 0 || this.table.length > this.diskEntries) return true;
    for (const b of this.blocks.values()) if (b.dirty) return true;
    return false;
  }

  /** The cache holds more dirty blocks than it should: write back soon. */
  get overfull(): boolean {
    return this.blocks.size > this.capacity;
  }

  /** Releases are waiting for the next flush. */
  get hasReleases(): boolean {
    return this.releasedCount > 0;
  }

  /** Refcount of cluster `index`. */
  async get(index: number): Promise<number> {
    const blk = await this.block(Math.floor(index / this.perBlock));
    return blk ? readEntry(blk.data, index % this.perBlock, this.order) : 0;
  }

  /**
   * Allocates `n` contiguous free clusters (first fit from the free cursor) and sets their
   * refcounts to 1; returns the host offset. No await happens between the choice and the
   * reservation that another allocation could observe: all callers hold the metadata lock.
   */
  async allocate(n: number): Promise<number> {
    // Runs as long as half a block would rarely fit between self-describing blocks: take them at the end.
    if (n * 2 >= this.perBlock) return this.allocateAtEnd(n);
    for (;;) {
      const { start, firstFree } = await this.scan(n);
      await this.guard?.check(start, n, 0);
      if (!this.ensureBlocks(start, n)) continue; // a new refcount block took one of the clusters
      await this.incrementRun(start, start + n);
      this.cursor = firstFree === start ? start + n : firstFree;
      this.highWater = Math.max(this.highWater, (start + n) * this.cs);
      return start * this.cs;
    }
  }

  /**
   * {@link allocate} without an await, for the common case: the refcount blocks the search looks
   * at are cached (or not on disk yet). The host offset, or -1 when a block would have to be
   * read or the run is taken at the end: the caller then awaits {@link allocate}, which finds
   * the same run (blocks made here meanwhile are the ones it would make).
   */
  allocateNow(n: number): number {
    if (n * 2 >= this.perBlock) return -1;
    for (;;) {
      const run = this.scanNow(n);
      if (run === null) return -1;
      const { start, firstFree } = run;
      if (this.guard && this.guard.clusters(start, n, 0) !== 0) return -1; // allocate() refuses it
      if (!this.ensureBlocks(start, n)) continue; // a new refcount block took one of the clusters
      // The scan saw every block of [start, start+n), and ensureBlocks made the missing ones: all cached.
      const E = this.perBlock;
      for (let i = start; i < start + n; ) {
        const b = Math.floor(i / E);
        const stop = Math.min(start + n, (b + 1) * E);
        this.incrementIn(this.blocks.get(b), b, i, stop);
        i = stop;
      }
      this.cursor = firstFree === start ? start + n : firstFree;
      this.highWater = Math.max(this.highWater, (start + n) * this.cs);
      return start * this.cs;
    }
  }

  /**
   * `n` clusters past everything allocated (all free there), followed by the refcount blocks
   * that are missing for them and for themselves (QEMU puts new blocks after the data too).
   */
  private async allocateAtEnd(n: number): Promise<number> {
    const E = this.perBlock;
    const s = Math.ceil(this.highWater / this.cs);
    const missing = (end: number) => {
      const out: number[] = [];
      for (let b = Math.floor(s / E); b <= Math.floor((end - 1) / E); b++) if (b >= this.table.length || this.table[b] === 0) out.push(b);
      return out;
    };
    let blocks = missing(s + n);
    for (let m = -1; m !== blocks.length; ) {
      m = blocks.length;
      blocks = missing(s + n + m);
    }
    if ((blocks[blocks.length - 1] ?? 0) * 8 >= L.MAX_REFTABLE_BYTES) {
      throw new BlockError('ENOSPC', `qcow2: the refcount table would exceed ${L.MAX_REFTABLE_BYTES} bytes`, { field: 'refcount_table_clusters' });
    }
    await this.guard?.check(s, n + blocks.length, 0);
    blocks.forEach((b, i) => {
      this.guard?.addBlock((s + n + i) * this.cs);
      while (this.table.length <= b) this.table.push(0);
      this.table[b] = (s + n + i) * this.cs;
      this.tableDirty.add(b);
      this.blocks.set(b, { offset: (s + n + i) * this.cs, data: new Uint8Array(this.cs), dirty: true });
    });
    const end = s + n + blocks.length;
    await this.incrementRun(s, end);
    this.highWater = end * this.cs;
    return s * this.cs;
  }

  /** Adds one reference to cluster `index` (compressed clusters sharing a host cluster). */
  async increment(index: number): Promise<void> {
    if (!this.ensureBlocks(index, 1)) throw this.notAllocated(index);
    await this.change(index, 1, false);
  }

  /**
   * Adds one reference to each of clusters `list[0..n)` (a cluster listed twice gets two), as
   * {@link increment} does one by one: a snapshot raises one entry per cluster of the image, so
   * the block is looked up once per run of clusters it covers, not once per cluster.
   */
  async incrementMany(list: ArrayLike<number>, n: number): Promise<void> {
    const E = this.perBlock;
    let b = -1;
    let blk: Block | undefined;
    for (let i = 0; i < n; i++) {
      const index = list[i];
      if (index < b * E || index >= (b + 1) * E) {
        b = Math.floor(index / E);
        if (!this.ensureBlocks(index, 1)) throw this.notAllocated(index);
        blk = await this.block(b);
      }
      // 16-bit entries (QEMU's default) changed in place; other widths through changeIn.
      if (this.order === 4 && blk) {
        const d = blk.data;
        const at = (index - b * E) * 2;
        const next = ((d[at] << 8) | d[at + 1]) + 1;
        if (next > 0xffff) this.changeIn(blk, index - b * E, index, 1, false);
        d[at] = next >> 8;
        d[at + 1] = next & 0xff;
        blk.dirty = true;
      } else this.changeIn(blk, index - b * E, index, 1, false);
    }
  }

  /** Refcounts of clusters `list[0..n)` into `out` (0 where no block covers one): one block lookup per run in the same block. */
  async getMany(list: ArrayLike<number>, n: number, out: { [i: number]: number }): Promise<void> {
    const E = this.perBlock;
    let b = -1;
    let blk: Block | undefined;
    for (let i = 0; i < n; i++) {
      const index = list[i];
      if (index < b * E || index >= (b + 1) * E) {
        b = Math.floor(index / E);
        blk = await this.block(b);
      }
      if (!blk) out[i] = 0;
      else if (this.order === 4) out[i] = (blk.data[(index - b * E) * 2] << 8) | blk.data[(index - b * E) * 2 + 1];
      else out[i] = readEntry(blk.data, index - b * E, this.order);
    }
  }

  /**
   * Drops one reference to every cluster in [offset, offset+length) once the L2/L1 tables that
   * referenced them are on disk (QEMU: the refcount cache depends on the L2 cache): until the
   * next flush the clusters keep their refcount and are not reused.
   */
  release(offset: number, length: number): void {
    const last = Math.floor((offset + length - 1) / this.cs);
    for (let i = Math.floor(offset / this.cs); i <= last; i++) this.addRelease(i);
  }

  /** {@link release} of clusters `list[0..n)` by index. */
  releaseClusters(list: ArrayLike<number>, n: number): void {
    if (this.releasedCount + n > this.released.length) this.growReleased(n);
    const r = this.released;
    for (let i = 0; i < n; i++) r[this.releasedCount + i] = list[i];
    this.releasedCount += n;
  }

  private addRelease(index: number): void {
    if (this.releasedCount === this.released.length) this.growReleased(1);
    this.released[this.releasedCount++] = index;
  }

  private growReleased(extra: number): void {
    const next = new Float64Array(Math.max(this.released.length * 2, this.releasedCount + extra));
    next.set(this.released.subarray(0, this.releasedCount));
    this.released = next;
  }

  /** Marks host bytes [offset, offset+length) as being read until {@link unpin} with the result. */
  pin(offset: number, length: number): ReadPin {
    const p: ReadPin = { first: Math.floor(offset / this.cs), last: Math.floor((offset + length - 1) / this.cs) };
    this.reading.add(p);
    return p;
  }

  unpin(p: ReadPin): void {
    this.reading.delete(p);
  }

  private pinned(index: number): boolean {
    for (const p of this.reading) if (index >= p.first && index <= p.last) return true;
    return false;
  }

  /**
   * Applies the releases; call only once the tables that dropped the references are synced.
   * Clusters still being read stay released-but-referenced until a later call.
   */
  async applyReleases(): Promise<void> {
    const list = this.released;
    let n = this.releasedCount;
    // New releases (and pinned ones) go to another list meanwhile; a call nested in this one's awaits finds no spare and makes one.
    this.released = this.spare ?? new Float64Array(256);
    this.releasedCount = 0;
    this.spare = undefined;
    if (this.reading.size > 0) {
      const all = n;
      n = 0;
      for (let k = 0; k < all; k++) {
        const i = list[k];
        if (this.pinned(i)) this.addRelease(i);
        else list[n++] = i;
      }
    }
    // One block lookup per run of clusters in the same block (a deleted snapshot frees one per cluster of the image).
    const E = this.perBlock;
    let b = -1;
    let blk: Block | undefined;
    for (let k = 0; k < n; k++) {
      const index = list[k];
      if (index < b * E || index >= (b + 1) * E) {
        b = Math.floor(index / E);
        blk = await this.block(b);
      }
      if (this.order === 4 && blk) {
        const d = blk.data;
        const at = (index - b * E) * 2;
        const next = ((d[at] << 8) | d[at + 1]) - 1;
        if (next < 0) this.changeIn(blk, index - b * E, index, -1, true);
        d[at] = next >> 8;
        d[at + 1] = next & 0xff;
        blk.dirty = true;
        if (next === 0 && index < this.cursor && index > 0) this.cursor = index;
      } else this.changeIn(blk, index - b * E, index, -1, true);
    }
    this.spare = list;
  }

  /**
   * Writes dirty blocks back, then (after a sync) the table entries that point to new blocks;
   * moves the table to a larger place first if it outgrew its clusters. The caller syncs after.
   */
  async writeBack(): Promise<void> {
    for (let round = 0; round < 8; round++) {
      const moved = this.table.length > this.diskEntries ? await this.allocateTable() : undefined;
      const writes: Promise<void>[] = [];
      for (const b of this.blocks.values()) {
        if (!b.dirty) continue;
        b.dirty = false;
        writes.push(this.io.write(b.offset, b.data).catch((e) => {
          b.dirty = true;
          throw e;
        }));
      }
      await settleAll(writes);
      if (!moved && this.tableDirty.size === 0) break;
      await this.io.sync();
      if (moved) {
        const bytes = new Uint8Array(moved.clusters * this.cs);
        const v = Buffer.from(bytes.buffer);
        for (let i = 0; i < this.table.length; i++) {
          v.writeUInt32BE(Math.floor(this.table[i] / 2 ** 32), i * 8);
          v.writeUInt32BE(this.table[i] >>> 0, i * 8 + 4);
        }
        await this.io.write(moved.offset, bytes);
        await this.io.sync();
        await this.relocate(moved.offset, moved.clusters);
        const old = { offset: this.tableOffset, clusters: (this.diskEntries * 8) / this.cs };
        this.tableOffset = moved.offset;
        this.diskEntries = (moved.clusters * this.cs) / 8;
        this.tableDirty.clear();
        // Nothing on disk points to the old table any more.
        for (let i = 0; i < old.clusters; i++) await this.change(old.offset / this.cs + i, -1, true);
        continue;
      }
      const dirty = [...this.tableDirty].sort((a, b) => a - b);
      this.tableDirty.clear();
      const first = dirty[0];
      const last = dirty[dirty.length - 1];
      const bytes = Buffer.alloc((last - first + 1) * 8);
      for (let i = first; i <= last; i++) {
        bytes.writeUInt32BE(Math.floor(this.table[i] / 2 ** 32), (i - first) * 8);
        bytes.writeUInt32BE(this.table[i] >>> 0, (i - first) * 8 + 4);
      }
      try {
        await this.io.write(this.tableOffset + first * 8, bytes);
      } catch (e) {
        for (const i of dirty) this.tableDirty.add(i);
        throw e;
      }
      break;
    }
    this.evictClean();
  }

  /** {@link scan} where every block it looks at is cached or not on disk; null at the first that would be read. */
  private scanNow(n: number): FreeRun | null {
    const E = this.perBlock;
    const run = newFreeRun(this.cursor, this.run);
    this.blockView.order = this.order;
    for (let i = this.cursor; run.length < n; ) {
      const b = Math.floor(i / E);
      const blk = this.blocks.get(b);
      if (blk === undefined && b < this.table.length && this.table[b] !== 0) return null;
      i = this.scanBlock(run, i, b, n, blk === undefined ? null : blk.data);
    }
    return run;
  }

  /** First run of `n` free clusters from the cursor, a refcount block at a time; clusters no block covers are free. */
  private async scan(n: number): Promise<FreeRun> {
    const E = this.perBlock;
    const run = newFreeRun(this.cursor, this.run);
    this.blockView.order = this.order;
    for (let i = this.cursor; run.length < n; ) {
      const b = Math.floor(i / E);
      const blk = await this.block(b);
      i = this.scanBlock(run, i, b, n, blk ? blk.data : null);
    }
    return run;
  }

  /** One step of a scan: extends `run` from cluster `i` over refcount block `b` (`data` null: no block, all free); the next cluster to look at. */
  private scanBlock(run: FreeRun, i: number, b: number, n: number, data: Uint8Array | null): number {
    const E = this.perBlock;
    const blockEnd = (b + 1) * E;
    if (data === null) {
      extendFreeRunFree(i, blockEnd, run);
      return blockEnd;
    }
    const view = this.blockView;
    view.data = data;
    view.base = b * E;
    return extendFreeRun(view, i, blockEnd, n, run);
  }

  /**
   * Creates the missing refcount blocks for [start, start+n). A new block describes itself: it
   * takes the first cluster of the range it covers (free, since no block counted it). Returns
   * false if that cluster lies inside [start, start+n): the caller scans again.
   */
  private ensureBlocks(start: number, n: number): boolean {
    const E = this.perBlock;
    let ok = true;
    for (let b = Math.floor(start / E); b <= Math.floor((start + n - 1) / E); b++) {
      if (b < this.table.length && this.table[b] !== 0) continue;
      // Block 0 counts the header: a new one would take the header's cluster (QEMU's overlap check refuses that write).
      if (b === 0) throw refcountTableEntryError(0, this.tableOffset, 'is empty: a new refcount block would overwrite the header (preventing invalid write on metadata: overlaps with qcow2_header)');
      if ((b + 1) * 8 > L.MAX_REFTABLE_BYTES) {
        throw new BlockError('ENOSPC', `qcow2: the refcount table would exceed ${L.MAX_REFTABLE_BYTES} bytes`, { field: 'refcount_table_clusters' });
      }
      const k = b * E;
      this.guard?.checkNow(k, 1);
      while (this.table.length <= b) this.table.push(0);
      this.guard?.addBlock(k * this.cs);
      const data = new Uint8Array(this.cs);
      writeEntry(data, 0, this.order, 1);
      this.table[b] = k * this.cs;
      this.tableDirty.add(b);
      this.blocks.set(b, { offset: k * this.cs, data, dirty: true });
      this.highWater = Math.max(this.highWater, (k + 1) * this.cs);
      if (k >= start && k < start + n) ok = false;
    }
    return ok;
  }

  /**
   * Adds one reference to each cluster of [first, end) (a new run: one refcount update per
   * block the run touches, not one lookup and one await per cluster). A block's entries are all
   * checked before any of them changes.
   */
  private async incrementRun(first: number, end: number): Promise<void> {
    const E = this.perBlock;
    for (let i = first; i < end; ) {
      const b = Math.floor(i / E);
      const stop = Math.min(end, (b + 1) * E);
      this.incrementIn(await this.block(b), b, i, stop);
      i = stop;
    }
  }

  /** Adds one reference to clusters [i, stop), all in block `b` (`blk`, undefined when not on disk: checkChange throws). */
  private incrementIn(blk: Block | undefined, b: number, i: number, stop: number): void {
    const E = this.perBlock;
    if (this.order === 4 && blk) {
      // 16-bit entries (QEMU's default) in place, as incrementMany does; an overflow throws as checkChange does.
      const d = blk.data;
      for (let k = i; k < stop; k++) {
        const at = (k - b * E) * 2;
        const next = ((d[at] << 8) | d[at + 1]) + 1;
        if (next > 0xffff) this.checkChange(blk, k - b * E, k, 1);
        d[at] = next >> 8;
        d[at + 1] = next & 0xff;
      }
      blk.dirty = true;
      return;
    }
    for (let k = i; k < stop; k++) this.checkChange(blk, k - b * E, k, 1);
    for (let k = i; k < stop; k++) writeEntry(blk!.data, k - b * E, this.order, readEntry(blk!.data, k - b * E, this.order) + 1);
    blk!.dirty = true;
  }

  private async change(index: number, delta: number, freeing: boolean): Promise<void> {
    const blk = await this.block(Math.floor(index / this.perBlock));
    this.changeIn(blk, index % this.perBlock, index, delta, freeing);
  }

  /** Adds `delta` to entry `at` of `blk` (the block of cluster `index`; undefined: no block covers it). */
  private changeIn(blk: Block | undefined, at: number, index: number, delta: number, freeing: boolean): void {
    const next = this.checkChange(blk, at, index, delta);
    writeEntry(blk!.data, at, this.order, next);
    blk!.dirty = true;
    if (freeing && next === 0 && index < this.cursor && index > 0) this.cursor = index;
  }

  /** The refcount entry `at` of `blk` (cluster `index`) would have after adding `delta`; throws when that is out of range. */
  private checkChange(blk: Block | undefined, at: number, index: number, delta: number): number {
    const old = blk ? readEntry(blk.data, at, this.order) : 0;
    const next = old + delta;
    if (!blk || next < 0) {
      throw new BlockError('ECORRUPT', `qcow2: refcount of cluster ${index} would drop below 0`, { offset: index * this.cs, field: 'refcount' });
    }
    if (next > this.max) {
      throw new BlockError('ENOSPC', `qcow2: refcount of cluster ${index} would exceed ${this.max} (refcount_bits ${2 ** this.order})`, {
        offset: index * this.cs,
        field: 'refcount_bits',
      });
    }
    return next;
  }

  private notAllocated(index: number): BlockError {
    return new BlockError('EIO', `qcow2: cluster ${index} is not allocated`, { offset: index * this.cs });
  }

  private async block(b: number): Promise<Block | undefined> {
    const hit = this.blocks.get(b);
    if (hit) {
      this.blocks.delete(b);
      this.blocks.set(b, hit);
      return hit;
    }
    const offset = b < this.table.length ? this.table[b] : 0;
    if (offset === 0) return undefined;
    if (offset % this.cs !== 0) throw refcountTableEntryError(b, this.tableOffset, `points to an unaligned refcount block at ${offset}`);
    // Blocks are written before the table points at them: one past every allocated cluster is a truncated or hostile image
    // (its zeros would free the header, tables and data for new allocations, which QEMU's overlap check then refuses).
    if (offset + this.cs > this.highWater) throw refcountTableEntryError(b, this.tableOffset, `points to a refcount block at ${offset}, past the end of the image (${this.highWater} bytes)`);
    await this.guard?.check(offset / this.cs, 1, OL_REFCOUNT_BLOCK); // its write-back would overwrite other metadata
    const data = await this.io.read(offset, this.cs);
    const blk: Block = { offset, data, dirty: false };
    this.blocks.set(b, blk);
    if (this.blocks.size > this.capacity) this.evictClean(b);
    return blk;
  }

  /** Drops clean blocks, least recently used first, down to the capacity. */
  private evictClean(keep = -1): void {
    for (const [b, blk] of this.blocks) {
      if (this.blocks.size <= this.capacity) return;
      if (!blk.dirty && b !== keep) this.blocks.delete(b);
    }
  }

  /** Clusters for a table holding every entry (and those its own allocation adds). */
  private async allocateTable(): Promise<{ offset: number; clusters: number }> {
    for (let slack = 1; ; slack *= 2) {
      const clusters = Math.ceil(((this.table.length + slack) * 8) / this.cs) + slack;
      if (clusters * this.cs > L.MAX_REFTABLE_BYTES) {
        throw new BlockError('ENOSPC', `qcow2: the refcount table would exceed ${L.MAX_REFTABLE_BYTES} bytes`, { field: 'refcount_table_clusters' });
      }
      const offset = await this.allocate(clusters);
      if ((clusters * this.cs) / 8 >= this.table.length) return { offset, clusters };
      for (let i = 0; i < clusters; i++) await this.change(offset / this.cs + i, -1, true);
    }
  }
}
