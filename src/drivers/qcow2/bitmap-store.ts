// Persistent dirty bitmaps of an open qcow2 image (QEMU block/qcow2-bitmap.c): loaded at open
// (and marked in use on a read-write open, so a crash leaves them inconsistent), stored at
// close in newly allocated clusters, removed at once. The hooks of src/node/types.ts.
import { BlockError } from '../../errors.js';
import { GranuleSet } from '../../node/granule-set.js';
import type { BlockNode } from '../../node/node.js';
import type { StoredBitmap } from '../../node/types.js';
import { addClusterBits, clusterBits, granulesPerCluster } from './bitmap-bits.js';
import { BITMAP_FLAG_AUTO, directoryEntryBytes, encodeDirectory, withBitmapsExtension } from './bitmap-directory.js';
import type { Qcow2Bitmap, Qcow2BitmapEntry } from './bitmaps.js';
import { BITMAP_ALL_ONES, entryOffset } from './entries.js';
import type { Qcow2Header } from './header.js';
import * as L from './limits.js';
import { type MetadataReader, metadataReader } from './open-steps.js';
import type { Refcounts } from './refcounts.js';

/** What the bitmaps of one image need from the driver. */
export interface BitmapStoreContext {
  file: BlockNode;
  h: Qcow2Header;
  /** The directory as read at open. */
  entries: Qcow2BitmapEntry[];
  /** Present when the image is writable. */
  refcounts: Refcounts | undefined;
  /** Runs `fn` holding the metadata lock, after every pending metadata write reached the disk. */
  exclusive: (<T>(fn: () => Promise<T>) => Promise<T>) | undefined;
}

const IN_USE = L.BITMAP_FLAG_IN_USE;

/** The persistent bitmaps of one open qcow2 image. */
export class Qcow2BitmapStore {
  private entries: Qcow2BitmapEntry[];
  private readonly cs: number;
  private readonly read: MetadataReader;
  /** Set once load() succeeded: a store without it would drop what was never loaded. */
  private loaded = false;

  constructor(private readonly c: BitmapStoreContext) {
    this.entries = c.entries;
    this.cs = c.h.clusterSize;
    this.read = metadataReader(c.file);
  }

  /** The bitmaps of the directory as it is now (for info). */
  listed(): Qcow2Bitmap[] {
    return this.entries.filter((e) => !e.shadowed).map((e) => ({ name: e.name, granularity: e.granularity, flags: e.flags }));
  }

  /** Calls `add` with the host offset and size in bytes of every bitmap table of the directory (the overlap check's map). */
  forEachTable(add: (offset: number, bytes: number) => void): void {
    for (const e of this.entries) add(e.tableOffset, e.tableSize * 8);
  }

  /** QEMU qcow2_load_dirty_bitmaps: the bits of every bitmap not in use; read-write, then every one is marked in use on disk. */
  async load(): Promise<StoredBitmap[]> {
    const out: StoredBitmap[] = [];
    for (const e of this.entries) {
      if (e.shadowed) continue;
      const inconsistent = (e.flags & IN_USE) !== 0;
      out.push({
        name: e.name,
        granularity: e.granularity,
        recording: (e.flags & BITMAP_FLAG_AUTO) !== 0,
        inconsistent,
        ...(inconsistent ? {} : { granules: await this.loadBits(e) }),
      });
    }
    const { exclusive } = this.c;
    if (exclusive && this.entries.some((e) => !e.shadowed && !(e.flags & IN_USE))) {
      const marked = this.entries.map((e) => (e.shadowed ? e : { ...e, flags: e.flags | IN_USE }));
      await exclusive(() => this.rewriteInPlace(marked));
      this.entries = marked;
    }
    this.loaded = true;
    return out;
  }

  /** Why a new persistent bitmap could not be stored here (QEMU qcow2_co_can_store_new_dirty_bitmap), or undefined. */
  canStore(name: string, granularity: number): string | undefined {
    if (this.c.h.version < 3) return 'Cannot store dirty bitmaps in qcow2 v2 files';
    const why = this.constraints(name, granularity);
    if (why !== undefined) return why;
    if (this.entries.length === 0) return undefined;
    if (this.entries.length >= L.MAX_BITMAPS) return 'Maximum number of persistent bitmaps is already reached';
    if ((this.c.h.bitmaps?.directorySize ?? 0) + directoryEntryBytes(name) > L.MAX_BITMAP_DIRECTORY_BYTES) return 'Not enough space in the bitmap directory';
    if (this.entries.some((e) => e.name === name)) return 'Bitmap with the same name is already stored';
    return undefined;
  }

  /**
   * QEMU qcow2_store_persistent_dirty_bitmaps: each consistent bitmap's bits into new clusters,
   * inconsistent ones kept as they are, a new directory; the header points at it only once all
   * of that is on disk, and the old clusters are freed after.
   */
  async store(bitmaps: readonly StoredBitmap[]): Promise<void> {
    const { exclusive } = this.c;
    if (!exclusive || !this.loaded) return;
    if (bitmaps.length === 0 && this.entries.length === 0) return;
    for (const b of bitmaps) {
      const why = b.inconsistent ? undefined : this.constraints(b.name, b.granularity);
      if (why !== undefined) throw new BlockError('EINVAL', `qcow2: cannot store bitmap '${b.name}': ${why}`, { field: 'bitmaps' });
    }
    await exclusive(async () => {
      const byName = new Map(bitmaps.map((b) => [b.name, b]));
      const next: Qcow2BitmapEntry[] = [];
      const drop: Qcow2BitmapEntry[] = [];
      const done = new Set<string>();
      for (const e of this.entries) {
        // Names of entries that are not shadowed are unique (checked at open).
        const b = e.shadowed ? undefined : byName.get(e.name);
        if (e.shadowed || b?.inconsistent) next.push(e);
        else if (b === undefined) drop.push(e);
        else {
          next.push(await this.writeBitmap(b));
          drop.push(e);
        }
        if (!e.shadowed) done.add(e.name);
      }
      for (const b of bitmaps) if (!done.has(b.name) && !b.inconsistent && b.granules) next.push(await this.writeBitmap(b));
      await this.replaceDirectory(next, drop);
    });
  }

  /** QEMU qcow2_co_remove_persistent_dirty_bitmap: the bitmap leaves the directory, then its clusters are freed (absent: nothing to do). */
  async remove(name: string): Promise<void> {
    const { exclusive } = this.c;
    const found = this.entries.find((e) => e.name === name);
    if (!exclusive || !found) return;
    await exclusive(() => this.replaceDirectory(this.entries.filter((e) => e !== found), [found]));
  }

  /** QEMU check_constraints_on_bitmap. */
  private constraints(name: string, granularity: number): string | undefined {
    const bits = Math.log2(granularity);
    if (bits < L.MIN_BITMAP_GRANULARITY_BITS) return `Granularity exceeds minimum (${2 ** L.MIN_BITMAP_GRANULARITY_BITS} bytes)`;
    if (bits > L.MAX_BITMAP_GRANULARITY_BITS) return `Granularity exceeds maximum (${2 ** L.MAX_BITMAP_GRANULARITY_BITS} bytes)`;
    if (this.c.h.size > L.MAX_BITMAP_PHYS_BYTES * 2 ** (bits + 3)) return 'Too much space will be occupied by the bitmap. Use larger granularity';
    if (Buffer.byteLength(name) > L.MAX_BITMAP_NAME) return `Name length exceeds maximum (${L.MAX_BITMAP_NAME} characters)`;
    return undefined;
  }

  /** The bits of a bitmap: table entry 0 reads as zeros, the all-ones flag as ones, else a cluster of bits. */
  private async loadBits(e: Qcow2BitmapEntry): Promise<GranuleSet> {
    const granules = new GranuleSet(Math.ceil(this.c.h.size / e.granularity));
    const table = Buffer.from(await this.read(e.tableOffset, e.tableSize * 8));
    const per = granulesPerCluster(this.cs);
    for (let i = 0; i < e.tableSize; i++) {
      const hi = table.readUInt32BE(i * 8);
      const lo = table.readUInt32BE(i * 8 + 4);
      const offset = entryOffset(hi, lo);
      if (offset !== 0) addClusterBits(granules, i * per, await this.read(offset, this.cs));
      else if (lo & BITMAP_ALL_ONES) granules.add(i * per, (i + 1) * per);
    }
    return granules;
  }

  /** Writes a bitmap's bits (clusters without a dirty bit stay 0 entries) and its table into new clusters: its new entry. */
  private async writeBitmap(b: StoredBitmap): Promise<Qcow2BitmapEntry> {
    const refcounts = this.c.refcounts!;
    const granules = b.granules!;
    const granularityBits = Math.log2(b.granularity);
    const per = granulesPerCluster(this.cs);
    const tableSize = Math.ceil(granules.size / per);
    const table = Buffer.alloc(Math.ceil((tableSize * 8) / this.cs) * this.cs);
    const bits = new Uint8Array(this.cs);
    for (let g = granules.next(0, true); g < granules.size; ) {
      const i = Math.floor(g / per);
      clusterBits(granules, i * per, bits);
      const at = await refcounts.allocate(1);
      await this.c.file.write(at, bits, true);
      table.writeUInt32BE(Math.floor(at / 2 ** 32), i * 8);
      table.writeUInt32BE(at >>> 0, i * 8 + 4);
      g = granules.next((i + 1) * per, true);
    }
    const tableOffset = await refcounts.allocate(table.length / this.cs);
    await this.c.file.write(tableOffset, table, true);
    const flags = b.recording ? BITMAP_FLAG_AUTO : 0;
    return { name: b.name, granularity: b.granularity, flags, granularityBits, tableOffset, tableSize, shadowed: false };
  }

  /**
   * Under the lock: `next` becomes the directory (in new clusters, synced with their refcounts
   * before the header points at them), then the old directory and the clusters of `drop` are freed.
   */
  private async replaceDirectory(next: Qcow2BitmapEntry[], drop: Qcow2BitmapEntry[]): Promise<void> {
    const { file, h } = this.c;
    const refcounts = this.c.refcounts!;
    let ext: { count: number; directoryOffset: number; directorySize: number } | undefined;
    if (next.length > 0) {
      const dir = encodeDirectory(next);
      const padded = new Uint8Array(Math.ceil(dir.length / this.cs) * this.cs);
      padded.set(dir);
      const directoryOffset = await refcounts.allocate(padded.length / this.cs);
      await file.write(directoryOffset, padded, true);
      ext = { count: next.length, directoryOffset, directorySize: dir.length };
    }
    await refcounts.writeBack();
    await file.flush();
    const header = withBitmapsExtension(await this.read(0, this.cs), h.headerLength, ext);
    await file.write(0, header);
    await file.flush();
    const old = h.bitmaps;
    if (ext) h.bitmaps = ext;
    else delete h.bitmaps;
    h.autoclear = ext ? (h.autoclear | L.AUTOCLEAR_BITMAPS) >>> 0 : h.autoclear & ~L.AUTOCLEAR_BITMAPS;
    this.entries = next;
    // Nothing on disk points at the old clusters any more.
    if (old) await this.free(old.directoryOffset, Math.ceil(old.directorySize / this.cs));
    for (const e of drop) if (!e.shadowed) await this.freeBitmap(e);
    await refcounts.applyReleases();
    await refcounts.writeBack();
    await file.flush();
  }

  /** Marks the bitmap table and data clusters of `e` for freeing. */
  private async freeBitmap(e: Qcow2BitmapEntry): Promise<void> {
    const table = Buffer.from(await this.read(e.tableOffset, e.tableSize * 8));
    for (let i = 0; i < e.tableSize; i++) {
      const offset = entryOffset(table.readUInt32BE(i * 8), table.readUInt32BE(i * 8 + 4));
      if (offset !== 0) await this.free(offset, 1);
    }
    await this.free(e.tableOffset, Math.ceil((e.tableSize * 8) / this.cs));
  }

  /** Marks `n` clusters at `offset` for freeing, those that are allocated (a hostile table may point anywhere unallocated). */
  private async free(offset: number, n: number): Promise<void> {
    const refcounts = this.c.refcounts!;
    for (let i = 0; i < n; i++) {
      const at = offset + i * this.cs;
      if (at < refcounts.end && (await refcounts.get(at / this.cs)) > 0) refcounts.release(at, this.cs);
    }
  }

  /**
   * QEMU update_ext_header_and_dir_in_place: the autoclear bit off (synced), the directory
   * rewritten where it is (same size: only flags change), the bit on again. A crash between
   * leaves the bitmaps ignored, never half-written.
   */
  private async rewriteInPlace(entries: Qcow2BitmapEntry[]): Promise<void> {
    const { file, h } = this.c;
    const ext = h.bitmaps!;
    const autoclear = async (on: boolean) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE((on ? h.autoclear | L.AUTOCLEAR_BITMAPS : h.autoclear & ~L.AUTOCLEAR_BITMAPS) >>> 0);
      await file.write(92, b);
      await file.flush();
    };
    const dir = encodeDirectory(entries);
    // QEMU bitmap_list_store refuses a directory that outgrows its place; one that shrank would leave the header's size stale.
    if (dir.length !== ext.directorySize) {
      throw new BlockError('EINVAL', `qcow2: Can't update bitmap directory: its entries take ${dir.length} bytes written back, the directory has ${ext.directorySize} (a name that holds a NUL byte)`, { field: 'bitmap directory', offset: ext.directoryOffset });
    }
    await autoclear(false);
    await file.write(ext.directoryOffset, dir);
    await file.flush();
    await autoclear(true);
  }
}
