// QEMU's metadata overlap check (block/qcow2-refcount.c, qcow2_check_metadata_overlap and
// qcow2_pre_write_overlap_check, overlap-check=cached): no write of data, and no metadata write
// to a new place, may land on the image's own metadata. A hostile image whose refcounts read 0
// for its tables would otherwise have them handed out as free clusters and overwritten.
import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import { entryOffset } from './entries.js';
import type { Qcow2Header } from './header.js';
import type { Qcow2Snapshot } from './snapshots.js';

/** Kinds of metadata, QEMU's QCOW2_OL_* bits (inactive L2 tables are not tracked: QEMU's cached mode skips them too). */
export const OL_HEADER = 1 << 0;
export const OL_ACTIVE_L1 = 1 << 1;
export const OL_ACTIVE_L2 = 1 << 2;
export const OL_REFCOUNT_TABLE = 1 << 3;
export const OL_REFCOUNT_BLOCK = 1 << 4;
export const OL_SNAPSHOT_TABLE = 1 << 5;
export const OL_INACTIVE_L1 = 1 << 6;
export const OL_BITMAP_DIRECTORY = 1 << 8;
/** Not one of QEMU's: the bitmap tables (QEMU checks only the directory). */
export const OL_BITMAP_TABLE = 1 << 9;
/** What a check answers once the image is marked corrupt: every write is refused. */
const OL_REFUSED = 1 << 30;

/** QEMU's metadata_ol_names. */
const NAMES: [number, string][] = [
  [OL_HEADER, 'qcow2_header'],
  [OL_ACTIVE_L1, 'active L1 table'],
  [OL_ACTIVE_L2, 'active L2 table'],
  [OL_REFCOUNT_TABLE, 'refcount table'],
  [OL_REFCOUNT_BLOCK, 'refcount block'],
  [OL_SNAPSHOT_TABLE, 'snapshot table'],
  [OL_INACTIVE_L1, 'inactive L1 table'],
  [OL_BITMAP_DIRECTORY, 'bitmap directory'],
  [OL_BITMAP_TABLE, 'bitmap table'],
];

/** QEMU's words for a write refused over metadata of `kinds` (the first kind names it). */
function overlapWhat(kinds: number): string {
  return `Preventing invalid write on metadata (overlaps with ${NAMES.find(([bit]) => kinds & bit)?.[1] ?? 'metadata'})`;
}

/** Most clusters one range of a (hostile) header or table may add: the map stays bounded. */
const MAX_RANGE_CLUSTERS = 1 << 22;

/** Where an open image's metadata is, read live when the map is built again. */
export interface MetadataSource {
  readonly h: Qcow2Header;
  /** The active L1 table and its host offset. */
  readonly l1: Buffer;
  readonly l1Offset: number;
  /** Host offset of every refcount block by index (0: none). */
  readonly refcountBlocks: readonly number[];
  readonly snapshots: readonly Qcow2Snapshot[];
  /** Calls `add` with the host offset and byte size of every persistent bitmap's table. */
  bitmapTables(add: (offset: number, bytes: number) => void): void;
}

/**
 * The host clusters that hold metadata, by cluster index, each with the kinds it holds: a map
 * answers per cluster in O(1) (QEMU's cached mode walks the active L1 table on every write).
 *
 * Kept current by adding what the writer and the allocator place (L2 tables, refcount blocks);
 * built again from the live state when something moves wholesale ({@link invalidate}: a resize,
 * a snapshot or bitmap change) and before any hit is believed, so that a cluster freed from
 * metadata and reused for data is never refused.
 */
export class MetadataOverlap {
  private readonly kinds = new Map<number, number>();
  private stale = true;
  private refusal: BlockError | undefined;
  private marking: Promise<void> | undefined;

  constructor(
    private readonly cs: number,
    private readonly source: MetadataSource,
    /** Sets the corrupt bit in the header and syncs. */
    private readonly markCorrupt: () => Promise<void>,
    private readonly nodeName: string,
  ) {}

  /** Set once a write was refused: the image is marked corrupt and takes no more writes. */
  get corrupt(): boolean {
    return this.refusal !== undefined;
  }

  /** The metadata moved: the map is built again before the next check. */
  invalidate(): void {
    this.stale = true;
  }

  /** Records `bytes` of metadata of `kind` at host `offset`. */
  add(offset: number, bytes: number, kind: number): void {
    if (bytes <= 0) return;
    const first = Math.floor(offset / this.cs);
    const n = Math.min(MAX_RANGE_CLUSTERS, Math.floor((offset + bytes - 1) / this.cs) - first + 1);
    for (let c = first; c < first + n; c++) this.kinds.set(c, (this.kinds.get(c) ?? 0) | kind);
  }

  /** A new refcount block at host `offset` (the allocator's hook). */
  addBlock(offset: number): void {
    this.add(offset, this.cs, OL_REFCOUNT_BLOCK);
  }

  /** The kinds of metadata (other than `ignore`) a write of host bytes [offset, offset+length) would overwrite; 0: none. */
  hits(offset: number, length: number, ignore: number): number {
    if (this.refusal !== undefined) return OL_REFUSED;
    const first = Math.floor(offset / this.cs);
    return this.clusters(first, Math.floor((offset + Math.max(length, 1) - 1) / this.cs) - first + 1, ignore);
  }

  /** {@link hits} for clusters [first, first+n). */
  clusters(first: number, n: number, ignore: number): number {
    if (this.refusal !== undefined) return OL_REFUSED;
    let rebuilt = false;
    if (this.stale) {
      this.rebuild();
      rebuilt = true;
    }
    let hit = this.scan(first, n, ignore);
    // The map may still hold a cluster that stopped being metadata: believe a hit only once the map is exact.
    if (hit !== 0 && !rebuilt) {
      this.rebuild();
      hit = this.scan(first, n, ignore);
    }
    return hit;
  }

  /** For the allocator: undefined when clusters [first, first+n) hold no metadata but `ignore`, else a refusal (see {@link refuse}). */
  check(first: number, n: number, ignore: number): Promise<never> | undefined {
    const hit = this.clusters(first, n, ignore);
    return hit === 0 ? undefined : this.refuse(hit, first * this.cs, n * this.cs);
  }

  /** {@link check} that throws at once (the mark still on its way to the disk). */
  checkNow(first: number, n: number): void {
    const hit = this.clusters(first, n, 0);
    if (hit !== 0) throw this.refuseNow(hit, first * this.cs, n * this.cs);
  }

  /** Writes metadata at `offset` unless it would overwrite metadata of another kind than `own`. */
  write(file: BlockNode, offset: number, data: Uint8Array, own: number): Promise<void> {
    const hit = this.hits(offset, data.length, own);
    return hit === 0 ? file.write(offset, data, true) : this.refuse(hit, offset, data.length);
  }

  /**
   * Marks the image corrupt (once) and rejects, once the mark is on disk, with the error for a
   * write of host bytes [offset, offset+length) over metadata of `kinds` (a {@link hits} answer).
   */
  async refuse(kinds: number, offset: number, length: number): Promise<never> {
    const e = this.refuseNow(kinds, offset, length);
    await this.settled();
    throw e;
  }

  /** {@link refuse} without waiting for the mark to reach the disk: the error to throw. */
  refuseNow(kinds: number, offset: number, length: number): BlockError {
    if (this.refusal !== undefined) return kinds === OL_REFUSED ? this.refusal : this.error(kinds, offset, length);
    const e = this.error(kinds, offset, length);
    this.refusal = new BlockError('ECORRUPT', `qcow2: the image is marked corrupt and takes no more writes (repair it with qemu-img check -r all): ${overlapWhat(kinds)}`, {
      node: this.nodeName,
    });
    // QEMU's report, once; a warning where the host has them (not the browser build's process).
    (globalThis.process as Partial<NodeJS.Process> | undefined)?.emitWarning?.(`qcow2: Marking image as corrupt: ${overlapWhat(kinds)}; further corruption events will be suppressed`, {
      code: 'QCOW2_CORRUPT',
    });
    this.marking = this.markCorrupt().catch(() => {});
    return e;
  }

  /** The error a write refused because the image is already marked corrupt gets. */
  refused(): Promise<never> {
    return this.settled().then(() => {
      throw this.refusal;
    });
  }

  /** Settles once the corrupt mark, if one was started, reached the disk (or failed to). */
  settled(): Promise<void> {
    return this.marking ?? Promise.resolve();
  }

  private error(kinds: number, offset: number, length: number): BlockError {
    return new BlockError('ECORRUPT', `qcow2: ${overlapWhat(kinds)}; image marked as corrupt`, {
      node: this.nodeName,
      field: 'overlap-check',
      offset,
      length,
    });
  }

  private scan(first: number, n: number, ignore: number): number {
    let hit = 0;
    if (n > this.kinds.size) {
      for (const [c, k] of this.kinds) if (c >= first && c < first + n) hit |= k;
    } else {
      for (let c = first; c < first + n; c++) hit |= this.kinds.get(c) ?? 0;
    }
    return hit & ~ignore;
  }

  private rebuild(): void {
    const s = this.source;
    const h = s.h;
    const cs = this.cs;
    this.kinds.clear();
    this.stale = false;
    this.add(0, cs, OL_HEADER);
    this.add(s.l1Offset, s.l1.length, OL_ACTIVE_L1);
    const l1 = s.l1;
    for (let at = 0; at + 8 <= l1.length; at += 8) {
      const l2 = entryOffset(l1.readUInt32BE(at), l1.readUInt32BE(at + 4));
      if (l2 !== 0) this.add(l2, cs, OL_ACTIVE_L2);
    }
    this.add(h.refcountTableOffset, h.refcountTableClusters * cs, OL_REFCOUNT_TABLE);
    for (const b of s.refcountBlocks) if (b !== 0) this.add(b, cs, OL_REFCOUNT_BLOCK);
    const last = s.snapshots[s.snapshots.length - 1];
    if (h.nbSnapshots > 0 && last !== undefined) {
      // To the end of the last entry's fixed part, id and name (its extra data may be any size: not counted).
      this.add(h.snapshotsOffset, last.entryOffset - h.snapshotsOffset + 40 + Buffer.byteLength(last.id) + Buffer.byteLength(last.name), OL_SNAPSHOT_TABLE);
    }
    for (const sn of s.snapshots) this.add(sn.l1TableOffset, sn.l1Size * 8, OL_INACTIVE_L1);
    if (h.bitmaps) this.add(h.bitmaps.directoryOffset, h.bitmaps.directorySize, OL_BITMAP_DIRECTORY);
    s.bitmapTables((offset, bytes) => this.add(offset, bytes, OL_BITMAP_TABLE));
  }
}
