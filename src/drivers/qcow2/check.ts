import { BlockError } from '../../errors.js';
import { type CheckOptions, type CheckResult, emptyResult } from '../../node/check-result.js';
import type { BlockNode } from '../../node/node.js';
import { parseHeader, type Qcow2Header } from './header.js';
import {
  BITMAP_ALL_ONES,
  BITMAP_TABLE_RESERVED_HI,
  BITMAP_TABLE_RESERVED_LO,
  COMPRESSED,
  COPIED,
  compressedHost,
  compressedLength,
  EXT_L2_ALLOC_BITS,
  EXT_L2_ZERO_BITS,
  entryHex,
  entryOffset,
  L1_RESERVED_HI,
  L1_RESERVED_LO,
  L2_RESERVED_HI,
  L2_RESERVED_LO,
  l2EntryBytes,
  REFTABLE_RESERVED_LO,
  reftableEntryOffset,
  setCopied,
  ZERO_FLAG,
} from './entries.js';
import * as L from './limits.js';
import { entriesPerBlock, entryBytes, RefcountArray, readEntry, refcountMax, writeEntry } from './refcount-entries.js';
import { rebuildRefcountStructure } from './rebuild.js';
import { readSnapshots } from './snapshots.js';

/** Options of one check pass. */
export type Qcow2CheckOptions = CheckOptions;

/**
 * The bytes the checker works on: the image's protocol node. A `BlockNode` fits, and so does
 * any object with these members; a write with `grow` may go past the end (a rebuild appends).
 */
export type CheckedFile = Pick<BlockNode, 'length' | 'read' | 'write' | 'flush'>;
/** @deprecated The checker runs on the image's protocol node: see {@link CheckedFile}. */
export type Qcow2File = CheckedFile;

/** Reads `length` bytes at `offset`; what lies past the end of the file reads as zeros (as QEMU's block layer does). */
async function readClamped(file: CheckedFile, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length);
  const n = Math.max(0, Math.min(length, file.length - offset));
  if (n > 0) await file.read(offset, out.subarray(0, n));
  return out;
}


/**
 * One pass of QEMU's qcow2 check (qcow2_co_check_locked): computes every cluster's refcount
 * from the metadata (header, L1/L2 tables of the image and its snapshots, snapshot table,
 * refcount structure, bitmaps), compares with the refcounts in the file, checks OFLAG_COPIED,
 * and with `repair` fixes what QEMU fixes (leaked refcounts; with 'all' refcounts too low,
 * COPIED flags, and a broken refcount structure, rebuilt from scratch).
 */
export async function checkQcow2(file: CheckedFile, opts: Qcow2CheckOptions = {}): Promise<CheckResult> {
  const first = await readClamped(file, 0, Math.min(file.length, 2 ** L.MAX_CLUSTER_BITS));
  const h = parseHeader(first, file.length);
  const c = new Checker(file, h, opts);
  await c.run();
  if (opts.repair && c.res.checkErrors === 0 && c.res.corruptions === 0) await markClean(file, h);
  return c.res;
}

/**
 * The qcow2 driver's check (qemu-img check): one pass; after a repair that fixed something, a
 * second pass whose counts are reported with the first's fixed counts, as qemu-img does.
 */
export async function checkAndRepair(file: CheckedFile, opts: CheckOptions): Promise<CheckResult> {
  const first = await checkQcow2(file, opts);
  if (!opts.repair || (first.corruptionsFixed === 0 && first.leaksFixed === 0)) return first;
  const again = await checkQcow2(file, { ...opts, repair: undefined });
  return { ...again, corruptionsFixed: first.corruptionsFixed, leaksFixed: first.leaksFixed };
}

/**
 * Repairs an image the way QEMU does when it opens a dirty (lazy refcounts) image read-write:
 * a check that fixes leaks and corruptions, rebuilding the refcount structure if needed, then
 * clears the dirty and corrupt bits. Rejects (ECORRUPT) when the check could not complete.
 * The caller re-reads the header afterwards: the refcount table may have moved.
 */
export async function repairRefcounts(file: CheckedFile, opts: Omit<Qcow2CheckOptions, 'repair'> = {}): Promise<CheckResult> {
  const res = await checkQcow2(file, { ...opts, repair: 'all' });
  if (res.checkErrors > 0) {
    throw new BlockError('ECORRUPT', `qcow2: could not repair dirty image${opts.filename ? ` '${opts.filename}'` : ''}: ${res.checkErrors} errors kept the check from completing`, {
      path: opts.filename,
    });
  }
  return res;
}

/** Clears the dirty and corrupt incompatible bits (QEMU qcow2_mark_clean and qcow2_mark_consistent). */
async function markClean(file: CheckedFile, h: Qcow2Header): Promise<void> {
  const bits = L.INCOMPAT_DIRTY | L.INCOMPAT_CORRUPT;
  if (h.version < 3 || (h.incompatible & bits) === 0) return;
  await file.flush();
  const word = Buffer.alloc(4);
  word.writeUInt32BE((h.incompatible & ~bits) >>> 0);
  await file.write(76, word);
  await file.flush();
}

class Checker {
  readonly res: CheckResult;
  private readonly cs: number;
  private readonly order: number;
  private readonly rbEntries: number;
  private readonly maxRefcount: number;
  private readonly fixLeaks: boolean;
  private readonly fixErrors: boolean;
  private readonly entryBytes: number;
  private readonly l2Entries: number;
  private readonly log: (line: string) => void;
  private reftable: Buffer = Buffer.alloc(0);
  private reftableOffset: number;
  private readonly refblocks = new Map<number, Buffer>();

  constructor(
    private readonly file: CheckedFile,
    private readonly h: Qcow2Header,
    opts: Qcow2CheckOptions,
  ) {
    this.res = emptyResult(opts.filename ?? '', 'qcow2');
    this.cs = h.clusterSize;
    this.order = h.refcountOrder;
    this.rbEntries = entriesPerBlock(this.cs, this.order);
    this.maxRefcount = refcountMax(this.order);
    this.fixLeaks = opts.repair !== undefined;
    this.fixErrors = opts.repair === 'all';
    this.entryBytes = l2EntryBytes(h.extendedL2);
    this.l2Entries = this.cs / this.entryBytes;
    this.log = opts.log ?? (() => {});
    this.reftableOffset = h.refcountTableOffset;
  }

  private clusters(bytes: number): number {
    return Math.ceil(bytes / this.cs);
  }

  /** QEMU qcow2_check_refcounts. */
  async run(): Promise<void> {
    const res = this.res;
    this.reftable = await readClamped(this.file, this.reftableOffset, this.h.refcountTableClusters * this.cs);
    res.totalClusters = this.clusters(this.h.size);
    let rc = new RefcountArray(this.clusters(this.file.length));
    const state = { rebuild: false, highest: 0 };
    await this.calculate(rc, state);
    const preCompare = { ...res };
    await this.compare(rc, state, false, false);

    if (state.rebuild && this.fixErrors) {
      const old = { ...res };
      this.log('Rebuilding refcount structure');
      try {
        const table = await rebuildRefcountStructure(this.file, this.h, rc);
        this.reftableOffset = table.offset;
        this.reftable = Buffer.from(table.bytes);
        this.refblocks.clear();
      } catch (e) {
        res.checkErrors++;
        this.log(`ERROR could not rebuild the refcount structure: ${(e as Error).message}`);
        return;
      }
      res.corruptions = 0;
      res.leaks = 0;
      state.rebuild = false;
      rc = new RefcountArray(this.clusters(this.file.length));
      // Allocation figures add up again, as in QEMU; qemu-img reports those of its re-check.
      await this.calculate(rc, state);
      let freshLeaks = 0;
      if (this.fixLeaks) {
        // The old refcount structure is leaked now; what cannot be fixed was leaked by the rebuild.
        const saved = { ...res };
        Object.assign(res, { corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0 });
        await this.compare(rc, state, true, false);
        if (state.rebuild) this.log('ERROR rebuilt refcount structure is still broken');
        freshLeaks = res.leaks;
        Object.assign(res, saved);
      }
      if (res.corruptions < old.corruptions) res.corruptionsFixed += old.corruptions - res.corruptions;
      if (res.leaks < old.leaks) res.leaksFixed += old.leaks - res.leaks;
      res.leaks += freshLeaks;
    } else if (this.fixLeaks) {
      if (state.rebuild) {
        this.log('ERROR need to rebuild refcount structures');
        res.checkErrors++;
        return;
      }
      if (res.leaks || res.corruptions) {
        Object.assign(res, preCompare);
        await this.compare(rc, state, this.fixLeaks, this.fixErrors);
      }
    }
    await this.flushRefblocks();
    await this.checkCopiedFlags();
    res.imageEndOffset = (state.highest + 1) * this.cs;
  }

  /** QEMU calculate_refcounts: every reference the metadata makes, counted in `rc`. */
  private async calculate(rc: RefcountArray, state: { rebuild: boolean }): Promise<void> {
    const h = this.h;
    await this.inc(rc, 0, this.cs);
    await this.checkL1(rc, h.l1TableOffset, h.l1Size, true);

    const read = (o: number, n: number) => readClamped(this.file, o, n);
    const snapshots = await readSnapshots(h, read);
    if (h.hasDataFile && snapshots.length > 0) this.corrupt(`ERROR ${snapshots.length} snapshots in image with data file`);
    for (const s of snapshots) {
      const name = `snapshot ${s.id} (${s.name})`;
      if (s.l1TableOffset % this.cs !== 0) {
        this.corrupt(`ERROR ${name} l1_offset=${s.l1TableOffset.toString(16)}: L1 table is not cluster aligned; snapshot table entry corrupted`);
        continue;
      }
      if (s.l1Size > L.MAX_L1_BYTES / 8) {
        this.corrupt(`ERROR ${name} l1_size=${s.l1Size.toString(16)}: L1 table is too large; snapshot table entry corrupted`);
        continue;
      }
      await this.checkL1(rc, s.l1TableOffset, s.l1Size, false);
    }
    if (snapshots.length > 0) {
      const last = snapshots[snapshots.length - 1];
      const head = await read(last.entryOffset, 40);
      const bytes = 40 + head.readUInt32BE(36) + head.readUInt16BE(12) + head.readUInt16BE(14);
      this.inc(rc, h.snapshotsOffset, last.entryOffset + Math.ceil(bytes / 8) * 8 - h.snapshotsOffset);
    }
    this.inc(rc, this.reftableOffset, this.reftable.length);
    await this.checkBitmaps(rc);
    await this.checkRefblocks(rc, state);
  }

  /** QEMU qcow2_inc_refcounts_imrt: one more reference to every cluster of [offset, offset + size). */
  private inc(rc: RefcountArray, offset: number, size: number): void {
    if (size <= 0) return;
    // The last cluster may be partly past the end of the file; a cluster or more beyond is corrupt.
    if (offset + size - this.file.length >= this.cs) {
      this.corrupt(`ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${offset.toString(16)} size 0x${size.toString(16)}`);
      return;
    }
    const last = Math.floor((offset + size - 1) / this.cs);
    for (let k = Math.floor(offset / this.cs); k <= last; k++) {
      const n = rc.get(k);
      if (n >= this.maxRefcount) {
        this.corrupt(`ERROR: overflow cluster offset=0x${(k * this.cs).toString(16)}`);
        continue;
      }
      rc.set(k, n + 1);
    }
  }

  private corrupt(line: string): void {
    this.res.corruptions++;
    this.log(line);
  }

  /** QEMU check_refcounts_l1: an L1 table, its L2 tables and the clusters they map. */
  private async checkL1(rc: RefcountArray, offset: number, size: number, active: boolean): Promise<void> {
    this.inc(rc, offset, size * 8);
    if (size === 0) return;
    const l1 = await readClamped(this.file, offset, size * 8);
    for (let i = 0; i < size; i++) {
      const hi = l1.readUInt32BE(i * 8);
      const lo = l1.readUInt32BE(i * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      if (hi & L1_RESERVED_HI || lo & L1_RESERVED_LO) this.corrupt(`ERROR found L1 entry with reserved bits set: ${entryHex(hi, lo)}`);
      const l2Offset = entryOffset(hi, lo);
      this.inc(rc, l2Offset, this.cs);
      if (l2Offset % this.cs !== 0) this.corrupt(`ERROR l2_offset=${l2Offset.toString(16)}: Table is not cluster aligned; L1 entry corrupted`);
      await this.checkL2(rc, l2Offset, active);
    }
  }

  /** QEMU check_refcounts_l2: the clusters one L2 table maps, and the allocation figures of the active layer. */
  private async checkL2(rc: RefcountArray, l2Offset: number, active: boolean): Promise<void> {
    const h = this.h;
    const res = this.res;
    // A table wholly past the end of the file reads as zeros: no entry to count (a hostile L1 has thousands of these).
    if (l2Offset >= this.file.length) return;
    const l2 = await readClamped(this.file, l2Offset, this.cs);
    let nextContiguous = 0;
    for (let i = 0; i < this.l2Entries; i++) {
      const e = i * this.entryBytes;
      const hi = l2.readUInt32BE(e);
      const lo = l2.readUInt32BE(e + 4);
      const zeroBits = h.extendedL2 ? l2.readUInt32BE(e + EXT_L2_ZERO_BITS) : 0;
      const allocBits = h.extendedL2 ? l2.readUInt32BE(e + EXT_L2_ALLOC_BITS) : 0;
      if (hi & COMPRESSED) {
        if (h.hasDataFile) {
          this.corrupt('ERROR compressed cluster in image with external data file');
          continue;
        }
        if (hi & COPIED) this.corrupt(`ERROR: coffset=0x${entryHex(hi & ~COPIED, lo)}: copied flag must never be set for compressed clusters`);
        if (zeroBits || allocBits) this.corrupt(`ERROR compressed cluster has a non-zero subcluster bitmap`);
        this.inc(rc, compressedHost(hi, lo, h.clusterBits), compressedLength(hi, lo, h.clusterBits));
        if (active) {
          res.allocatedClusters++;
          res.compressedClusters++;
          // Compressed clusters share sectors: QEMU counts every one as fragmented.
          res.fragmentedClusters++;
        }
        continue;
      }
      if (hi & L2_RESERVED_HI || lo & L2_RESERVED_LO) this.corrupt(`ERROR found l2 entry with reserved bits set: ${entryHex(hi, lo)}`);
      const offset = entryOffset(hi, lo);
      const allocated = offset !== 0 || (h.hasDataFile && (hi & COPIED) !== 0);
      if (!allocated) {
        if (h.extendedL2 && allocBits) this.corrupt('ERROR: Unallocated cluster has non-zero subcluster allocation map');
        continue;
      }
      // From here: a data cluster or a preallocated zero cluster, both counted alike.
      if (zeroBits & allocBits) this.corrupt(`ERROR offset=${offset.toString(16)}: Allocated cluster has corrupted subcluster allocation bitmap`);
      if (offset % this.cs !== 0) {
        const holdsData = h.extendedL2 ? allocBits !== 0 : (lo & ZERO_FLAG) === 0;
        if (holdsData) this.corrupt(`ERROR offset=${offset.toString(16)}: Data cluster is not properly aligned; L2 entry corrupted.`);
        else {
          this.log(`${this.fixErrors ? 'Repairing' : 'ERROR'} offset=${offset.toString(16)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
          if (!this.fixErrors) res.corruptions++;
          else {
            // A zero cluster needs no host cluster: it becomes a plain zero cluster (QEMU does the same).
            const entry = Buffer.alloc(8);
            if (!h.extendedL2) entry.writeUInt32BE(ZERO_FLAG, 4);
            await this.file.write(l2Offset + e, entry, true);
            await this.file.flush();
            res.corruptionsFixed++;
            continue;
          }
        }
      }
      if (active) {
        res.allocatedClusters++;
        if (nextContiguous && offset !== nextContiguous) res.fragmentedClusters++;
        nextContiguous = offset + this.cs;
      }
      // Clusters of an external data file have no refcounts.
      if (!h.hasDataFile) this.inc(rc, offset, this.cs);
    }
  }

  /** QEMU qcow2_check_bitmaps_refcounts: the bitmap directory, bitmap tables and bitmap data clusters. */
  private async checkBitmaps(rc: RefcountArray): Promise<void> {
    const ext = this.h.bitmaps;
    if (!ext) return;
    this.inc(rc, ext.directoryOffset, ext.directorySize);
    const dir = await readClamped(this.file, ext.directoryOffset, ext.directorySize);
    const tables: { offset: number; size: number }[] = [];
    for (let e = 0; e < dir.length; ) {
      if (e + L.BITMAP_ENTRY_BYTES > dir.length) return this.corrupt('ERROR bitmap directory is corrupted');
      const offset = dir.readUInt32BE(e) * 2 ** 32 + dir.readUInt32BE(e + 4);
      const size = dir.readUInt32BE(e + 8);
      const next = e + Math.ceil((L.BITMAP_ENTRY_BYTES + dir.readUInt32BE(e + 20) + dir.readUInt16BE(e + 18)) / 8) * 8;
      if (next > dir.length || offset % this.cs !== 0 || size === 0 || size > L.MAX_BITMAP_TABLE_ENTRIES) return this.corrupt('ERROR bitmap directory is corrupted');
      tables.push({ offset, size });
      e = next;
    }
    if (tables.length !== ext.count) return this.corrupt('ERROR bitmap directory is corrupted');
    for (const t of tables) {
      this.inc(rc, t.offset, t.size * 8);
      const table = await readClamped(this.file, t.offset, t.size * 8);
      for (let i = 0; i < t.size; i++) {
        const hi = table.readUInt32BE(i * 8);
        const lo = table.readUInt32BE(i * 8 + 4);
        const offset = entryOffset(hi, lo);
        if (hi & BITMAP_TABLE_RESERVED_HI || lo & BITMAP_TABLE_RESERVED_LO || offset % this.cs !== 0 || (offset !== 0 && lo & BITMAP_ALL_ONES)) {
          this.corrupt(`ERROR bitmap table entry ${entryHex(hi, lo)} is corrupted`);
          continue;
        }
        if (offset !== 0) this.inc(rc, offset, this.cs);
      }
    }
  }

  /** QEMU check_refblocks: each refcount block is referenced once, by the refcount table alone. */
  private async checkRefblocks(rc: RefcountArray, state: { rebuild: boolean }): Promise<void> {
    const n = this.reftable.length / 8;
    for (let i = 0; i < n; i++) {
      const hi = this.reftable.readUInt32BE(i * 8);
      const lo = this.reftable.readUInt32BE(i * 8 + 4);
      const offset = reftableEntryOffset(hi, lo);
      if (lo & REFTABLE_RESERVED_LO) {
        this.corrupt(`ERROR refcount table entry ${i} has reserved bits set`);
        state.rebuild = true;
        continue;
      }
      if (offset % this.cs !== 0) {
        this.corrupt(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
        state.rebuild = true;
        continue;
      }
      const cluster = offset / this.cs;
      if (cluster >= rc.size) {
        this.log(`${this.fixErrors ? 'Repairing' : 'ERROR'} refcount block ${i} is outside image`);
        if (this.fixErrors && (await this.growTo(offset + this.cs))) {
          // The file now reaches the block (QEMU grows it too); its refcounts read as 0 there.
          rc.grow(this.clusters(this.file.length));
          this.res.corruptionsFixed++;
          this.inc(rc, offset, this.cs);
          continue;
        }
        this.res.corruptions++;
        if (this.fixErrors) state.rebuild = true;
        continue;
      }
      if (offset === 0) continue;
      this.inc(rc, offset, this.cs);
      if (rc.get(cluster) !== 1) {
        this.corrupt(`ERROR refcount block ${i} refcount=${rc.get(cluster)}`);
        state.rebuild = true;
      }
    }
  }

  /** Grows the file to `size` bytes; false if it cannot. */
  private async growTo(size: number): Promise<boolean> {
    try {
      await this.file.write(size - this.cs, new Uint8Array(this.cs), true);
      return true;
    } catch (e) {
      this.log(`ERROR could not resize image: ${(e as Error).message}`);
      return false;
    }
  }

  /** The refcount block holding `cluster`'s entry: its offset, or 0 for none, or an error message. */
  private refblockOf(cluster: number): number | string {
    const index = Math.floor(cluster / this.rbEntries);
    if (index * 8 >= this.reftable.length) return 0;
    const hi = this.reftable.readUInt32BE(index * 8);
    const lo = this.reftable.readUInt32BE(index * 8 + 4);
    const offset = reftableEntryOffset(hi, lo);
    if (offset % this.cs !== 0) return `Refblock offset ${offset.toString(16)} unaligned (reftable index: ${index})`;
    return offset;
  }

  private async refblock(offset: number): Promise<Buffer> {
    let b = this.refblocks.get(offset);
    if (!b) {
      b = await readClamped(this.file, offset, this.cs);
      this.refblocks.set(offset, b);
    }
    return b;
  }

  /** The refcount the file records for `cluster` (QEMU qcow2_get_refcount), or an error message. */
  private async diskRefcount(cluster: number): Promise<number | string> {
    const at = this.refblockOf(cluster);
    if (typeof at === 'string') return at;
    if (at === 0) return 0;
    return readEntry(await this.refblock(at), cluster % this.rbEntries, this.order);
  }

  /** Sets the refcount the file records for `cluster` (its refcount block exists: the old count was not 0). */
  private async setDiskRefcount(cluster: number, value: number): Promise<void> {
    const at = this.refblockOf(cluster) as number;
    const block = await this.refblock(at);
    const index = cluster % this.rbEntries;
    writeEntry(block, index, this.order, value);
    const { start, end } = entryBytes(index, this.order);
    await this.file.write(at + start, block.subarray(start, end), true);
    this.dirtyRefblocks = true;
  }

  private dirtyRefblocks = false;

  private async flushRefblocks(): Promise<void> {
    if (!this.dirtyRefblocks) return;
    await this.file.flush();
    this.dirtyRefblocks = false;
  }

  /** QEMU compare_refcounts: the file's refcounts against the computed ones, fixing what `fix*` allows. */
  private async compare(rc: RefcountArray, state: { rebuild: boolean; highest: number }, fixLeaks: boolean, fixErrors: boolean): Promise<void> {
    const res = this.res;
    state.highest = 0;
    const E = this.rbEntries;
    // A refcount block at a time: its reftable entry and its bytes looked up once (a file grown by a repair has millions of clusters).
    for (let first = 0; first < rc.size; first += E) {
      const at = this.refblockOf(first);
      const block = typeof at === 'string' || at === 0 ? null : (this.refblocks.get(at) ?? (await this.refblock(at)));
      for (let i = first, end = Math.min(rc.size, first + E); i < end; i++) {
        const disk = typeof at === 'string' ? at : block === null ? 0 : readEntry(block, i - first, this.order);
        if (typeof disk === 'string') {
          this.log(`Can't get refcount for cluster ${i}: ${disk}`);
          res.checkErrors++;
          continue;
        }
        const want = rc.get(i);
        if (disk > 0 || want > 0) state.highest = i;
        if (disk === want) continue;
        let fixed: 'leaksFixed' | 'corruptionsFixed' | undefined;
        if (disk === 0) state.rebuild = true;
        else if (disk > want && fixLeaks) fixed = 'leaksFixed';
        else if (disk < want && fixErrors) fixed = 'corruptionsFixed';
        this.log(`${fixed ? 'Repairing' : disk < want ? 'ERROR' : 'Leaked'} cluster ${i} refcount=${disk} reference=${want}`);
        if (fixed) {
          await this.setDiskRefcount(i, want);
          res[fixed]++;
          continue;
        }
        if (disk < want) res.corruptions++;
        else res.leaks++;
      }
    }
    await this.flushRefblocks();
  }

  /** QEMU check_oflag_copied: the COPIED flag of active L1 and L2 entries says "refcount is exactly 1". */
  private async checkCopiedFlags(): Promise<void> {
    const h = this.h;
    const res = this.res;
    const l1 = await readClamped(this.file, h.l1TableOffset, h.l1Size * 8);
    // With leaks-only repair, flags are fixed when nothing else is wrong: the refcounts
    // (already repaired) can then be trusted.
    const repair = this.fixErrors || (this.fixLeaks && !res.checkErrors && !res.corruptions && !res.leaks);
    let wrote = false;
    for (let i = 0; i < h.l1Size; i++) {
      const hi = l1.readUInt32BE(i * 8);
      const lo = l1.readUInt32BE(i * 8 + 4);
      const l2Offset = entryOffset(hi, lo);
      if (l2Offset === 0) continue;
      const l2Refcount = await this.diskRefcount(Math.floor(l2Offset / this.cs));
      if (typeof l2Refcount === 'string') continue;
      if ((l2Refcount === 1) !== ((hi & COPIED) !== 0)) {
        this.log(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${entryHex(hi, lo)} refcount=${l2Refcount}`);
        if (repair) {
          const entry = Buffer.alloc(4);
          entry.writeUInt32BE(setCopied(hi, l2Refcount === 1));
          await this.file.write(h.l1TableOffset + i * 8, entry, true);
          wrote = true;
          res.corruptionsFixed++;
        } else res.corruptions++;
      }
      if (l2Offset >= this.file.length) continue; // all zeros: no COPIED flag to check
      const l2 = await readClamped(this.file, l2Offset, this.cs);
      let dirty = 0;
      for (let j = 0; j < this.l2Entries; j++) {
        const e = j * this.entryBytes;
        const ehi = l2.readUInt32BE(e);
        const elo = l2.readUInt32BE(e + 4);
        if (ehi & COMPRESSED) continue;
        const offset = entryOffset(ehi, elo);
        if (offset === 0 && !(h.hasDataFile && ehi & COPIED)) continue;
        let refcount: number | string = 1;
        if (!h.hasDataFile) refcount = await this.diskRefcount(Math.floor(offset / this.cs));
        if (typeof refcount === 'string') continue;
        if ((refcount === 1) === ((ehi & COPIED) !== 0)) continue;
        this.log(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED data cluster: l2_entry=${entryHex(ehi, elo)} refcount=${refcount}`);
        if (repair) {
          l2.writeUInt32BE(setCopied(ehi, refcount === 1), e);
          dirty++;
        } else res.corruptions++;
      }
      if (dirty > 0) {
        await this.file.write(l2Offset, l2, true);
        wrote = true;
        res.corruptionsFixed += dirty;
      }
    }
    if (wrote) await this.file.flush();
  }
}

/** Host bytes a compressed L2 entry points to: its sectors may run into the next host cluster. */
export function compressedExtent(hi: number, lo: number, clusterBits: number): { host: number; length: number } {
  return { host: compressedHost(hi, lo, clusterBits), length: compressedLength(hi, lo, clusterBits) };
}
