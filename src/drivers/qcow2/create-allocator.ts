import { extendFreeRun, newFreeRun, type RefcountView } from './free-run.js';
import { MAX_REFTABLE_BYTES } from './limits.js';

/**
 * An in-memory model of a qcow2 file while it is being created: its metadata clusters, its
 * refcount structures and QEMU's cluster allocator. The allocator follows the behaviour of
 * QEMU's qcow2-refcount.c (first fit from a moving free index, refcount blocks that describe
 * themselves, restart after metadata was placed, refcount table growth into a self-describing
 * area) so that the clusters land where `qemu-img create` puts them and the files compare
 * byte for byte. Only metadata is held; data clusters are just counted.
 */

export class Qcow2FileModel {
  readonly clusterSize: number;
  readonly clusterBits: number;
  readonly refcountBits: number;
  /** log2 of the number of refcount entries in one refcount block. */
  readonly refblockBits: number;
  /** Metadata clusters written so far, by cluster index (the rest of the file reads as zeros). */
  readonly clusters = new Map<number, Uint8Array>();
  /** Length of the host file. */
  fileLength = 0;
  refcountTable: number[];
  refcountTableOffset: number;
  /** Next cluster index the allocator looks at (QEMU free_cluster_index). */
  private freeIndex = 0;
  /** The model's refcounts as the free-cluster search reads them. */
  private readonly view: RefcountView = { get: (index) => this.refcount(index) };

  constructor(clusterBits: number, refcountOrder: number) {
    this.clusterBits = clusterBits;
    this.clusterSize = 2 ** clusterBits;
    this.refcountBits = 2 ** refcountOrder;
    this.refblockBits = clusterBits + 3 - refcountOrder;
    // The starting point of qemu-img create: a refcount table in cluster 1 pointing to the
    // (still empty) refcount block in cluster 2; header, table and block not yet counted.
    this.refcountTableOffset = this.clusterSize;
    this.refcountTable = new Array(this.clusterSize / 8).fill(0);
    this.refcountTable[0] = 2 * this.clusterSize;
    this.cluster(2);
    this.writeTableEntries(0, this.clusterSize / 8);
    this.extend(3 * this.clusterSize);
  }

  /**
   * The part of each cluster that was written, [start, end) in the cluster: a whole cluster for
   * tables written through QEMU's caches, only the bytes written for the rest (the L1 table),
   * so the new file has the same holes.
   */
  readonly written = new Map<number, [number, number]>();

  /** The buffer of cluster `index` (created zeroed on first use); the whole cluster counts as written. */
  cluster(index: number): Uint8Array {
    this.written.set(index, [0, this.clusterSize]);
    return this.buffer(index);
  }

  private buffer(index: number): Uint8Array {
    let c = this.clusters.get(index);
    if (!c) {
      c = new Uint8Array(this.clusterSize);
      this.clusters.set(index, c);
    }
    return c;
  }

  /** Records that the file reaches at least `end` (a write or a truncate there). */
  extend(end: number): void {
    if (end > this.fileLength) this.fileLength = end;
  }

  /** Writes bytes at a host offset (metadata only), extending the file. */
  write(offset: number, data: Uint8Array): void {
    let pos = 0;
    while (pos < data.length) {
      const at = offset + pos;
      const index = Math.floor(at / this.clusterSize);
      const into = at - index * this.clusterSize;
      const n = Math.min(this.clusterSize - into, data.length - pos);
      this.buffer(index).set(data.subarray(pos, pos + n), into);
      const [from, to] = this.written.get(index) ?? [into, into + n];
      this.written.set(index, [Math.min(from, into), Math.max(to, into + n)]);
      pos += n;
    }
    this.extend(offset + data.length);
  }

  private writeTableEntries(from: number, count: number): void {
    const b = Buffer.alloc(count * 8);
    for (let i = 0; i < count; i++) b.writeBigUInt64BE(BigInt(this.refcountTable[from + i] ?? 0), i * 8);
    this.write(this.refcountTableOffset + from * 8, b);
  }

  private refcountAt(block: Uint8Array, index: number): number {
    const bits = this.refcountBits;
    const v = Buffer.from(block.buffer, block.byteOffset, block.byteLength);
    if (bits < 8) {
      const perByte = 8 / bits;
      return (block[Math.floor(index / perByte)] >> ((index % perByte) * bits)) & ((1 << bits) - 1);
    }
    if (bits === 8) return block[index];
    if (bits === 16) return v.readUInt16BE(index * 2);
    if (bits === 32) return v.readUInt32BE(index * 4);
    return Number(v.readBigUInt64BE(index * 8));
  }

  private setRefcountAt(block: Uint8Array, index: number, value: number): void {
    const bits = this.refcountBits;
    const v = Buffer.from(block.buffer, block.byteOffset, block.byteLength);
    if (bits < 8) {
      const perByte = 8 / bits;
      const shift = (index % perByte) * bits;
      const mask = ((1 << bits) - 1) << shift;
      const at = Math.floor(index / perByte);
      block[at] = (block[at] & ~mask) | ((value << shift) & mask);
    } else if (bits === 8) block[index] = value;
    else if (bits === 16) v.writeUInt16BE(value, index * 2);
    else if (bits === 32) v.writeUInt32BE(value, index * 4);
    else v.writeBigUInt64BE(BigInt(value), index * 8);
  }

  /** The refcount block buffer covering cluster `index`, if it exists. */
  private blockFor(index: number): Uint8Array | undefined {
    const t = Math.floor(index / 2 ** this.refblockBits);
    const off = t < this.refcountTable.length ? this.refcountTable[t] : 0;
    return off ? this.cluster(off / this.clusterSize) : undefined;
  }

  refcount(index: number): number {
    const block = this.blockFor(index);
    return block ? this.refcountAt(block, index % 2 ** this.refblockBits) : 0;
  }

  /** First fit of `count` free clusters from the free index, without counting them (QEMU alloc_clusters_noref). */
  private allocNoref(count: number): number {
    const run = newFreeRun(this.freeIndex);
    this.freeIndex = extendFreeRun(this.view, this.freeIndex, Number.POSITIVE_INFINITY, count, run);
    return run.start * this.clusterSize;
  }

  /** Allocates and counts `bytes` worth of clusters (QEMU qcow2_alloc_clusters); returns the host offset. */
  allocClusters(bytes: number): number {
    for (;;) {
      const offset = this.allocNoref(Math.ceil(bytes / this.clusterSize));
      if (this.updateRefcount(offset, bytes, 1)) return offset;
    }
  }

  /** Counts up to `count` clusters from `offset` as far as they are free (QEMU qcow2_alloc_clusters_at); returns how many. */
  allocClustersAt(offset: number, count: number): number {
    if (count === 0) return 0;
    for (;;) {
      let i = 0;
      while (i < count && this.refcount(offset / this.clusterSize + i) === 0) i++;
      if (this.updateRefcount(offset, i * this.clusterSize, 1)) return i;
    }
  }

  freeClusters(offset: number, bytes: number): void {
    this.updateRefcount(offset, bytes, -1);
  }

  /** Adds `addend` to the refcount of every cluster of a range; false when the caller must search again. */
  private updateRefcount(offset: number, length: number, addend: 1 | -1): boolean {
    if (length <= 0) return true;
    const cs = this.clusterSize;
    const start = Math.floor(offset / cs) * cs;
    const last = Math.floor((offset + length - 1) / cs) * cs;
    let oldTable = -1;
    let block: Uint8Array | undefined;
    for (let at = start; at <= last; at += cs) {
      const index = at / cs;
      const t = Math.floor(index / 2 ** this.refblockBits);
      if (t !== oldTable) {
        if (!this.ensureRefblock(index)) {
          // Undo what was counted, as QEMU does, and make the caller search again.
          this.updateRefcount(offset, at - offset, addend === 1 ? -1 : 1);
          return false;
        }
        block = this.blockFor(index);
      }
      oldTable = t;
      const i = index % 2 ** this.refblockBits;
      const value = this.refcountAt(block!, i) + addend;
      if (value < 0 || value >= 2 ** Math.min(this.refcountBits, 53)) throw new Error(`qcow2 create: refcount of cluster ${index} out of range`);
      if (value === 0 && index < this.freeIndex) this.freeIndex = index;
      this.setRefcountAt(block!, i, value);
    }
    return true;
  }

  /**
   * Makes sure the refcount block for cluster `index` exists (QEMU alloc_refcount_block);
   * false when a new block was placed and the caller's search must restart.
   */
  private ensureRefblock(index: number): boolean {
    const cs = this.clusterSize;
    const t = Math.floor(index / 2 ** this.refblockBits);
    if (t < this.refcountTable.length && this.refcountTable[t]) return true;
    const newBlock = this.allocNoref(1);
    const sameBlock = Math.floor(newBlock / cs / 2 ** this.refblockBits) === t;
    if (sameBlock) {
      const b = this.cluster(newBlock / cs);
      b.fill(0);
      this.setRefcountAt(b, (newBlock / cs) % 2 ** this.refblockBits, 1);
    } else {
      // Counted by another refcount block, which may have to be made first: the new block
      // keeps its place meanwhile (qemu-img 7.2 hooks it up there; measured with 512-byte
      // clusters, 64-bit refcounts, preallocation=metadata).
      while (!this.updateRefcount(newBlock, cs, 1)) {
        // the other block was placed; count this one again
      }
      this.cluster(newBlock / cs).fill(0);
    }
    this.extend(newBlock + cs);
    if (t < this.refcountTable.length) {
      this.refcountTable[t] = newBlock;
      this.writeTableEntries(t, 1);
      // The search restarts at the cluster that needed the block: qemu-img 7.2 then puts an
      // L2 table that opened a new refcount block before that block (measured: 4 KiB
      // clusters, preallocation=metadata, 1 GiB).
      if (index < this.freeIndex) this.freeIndex = index;
      return false;
    }
    const blocksUsed = Math.ceil(Math.max(index + 1, newBlock / cs + 1) / 2 ** this.refblockBits);
    this.refcountArea(blocksUsed * 2 ** this.refblockBits * cs, 0, false, t, newBlock);
    return false;
  }

  /**
   * Places a new refcount table and the refcount blocks that cover themselves plus
   * `additional` clusters at `start` (the end of the used file), switches to that table and
   * frees the old one (QEMU qcow2_refcount_area). Returns the offset after the new structures.
   */
  refcountArea(start: number, additional: number, exact: boolean, newIndex: number, newOffset: number): number {
    const cs = this.clusterSize;
    const perBlock = 2 ** this.refblockBits;
    const total = refblockCount(start / cs + additional, cs, this.refcountBits, !exact);
    const areaIndex = Math.floor(start / cs / perBlock);
    let tableSize = exact ? total : total + Math.ceil(total / 2);
    tableSize = Math.ceil(tableSize / (cs / 8)) * (cs / 8);
    if (tableSize * 8 > MAX_REFTABLE_BYTES) throw new RangeError('refcount table would exceed 8 MiB');
    const tableClusters = (tableSize * 8) / cs;
    const table = new Array<number>(tableSize).fill(0);
    for (let i = 0; i < Math.min(tableSize, this.refcountTable.length); i++) table[i] = this.refcountTable[i];
    if (newOffset) table[newIndex] = newOffset;
    let missing = 0;
    for (let i = areaIndex; i < total; i++) if (!table[i]) missing++;
    const tableOffset = start + missing * cs;
    const end = tableOffset + tableClusters * cs;
    let blockOffset = start;
    for (let i = areaIndex; i < total; i++) {
      let block: Uint8Array;
      if (table[i]) block = this.cluster(table[i] / cs);
      else {
        block = this.cluster(blockOffset / cs);
        block.fill(0);
        table[i] = blockOffset;
        blockOffset += cs;
      }
      this.extend(table[i] + cs);
      const first = i * perBlock * cs;
      if (first < end) {
        const from = first < start ? (start - first) / cs : 0;
        const to = Math.min((end - first) / cs, perBlock);
        for (let j = from; j < to; j++) this.setRefcountAt(block, j, 1);
      }
    }
    const oldOffset = this.refcountTableOffset;
    const oldSize = this.refcountTable.length;
    this.refcountTable = table;
    this.refcountTableOffset = tableOffset;
    this.writeTableEntries(0, tableSize);
    this.freeClusters(oldOffset, oldSize * 8);
    return end;
  }

  /** Clusters in the refcount table, for the header. */
  get refcountTableClusters(): number {
    return (this.refcountTable.length * 8) / this.clusterSize;
  }
}

/**
 * Refcount blocks needed to count `clusters` clusters plus the refcount structures themselves
 * (the fixed point QEMU's qcow2_refcount_metadata_size finds); `generous` leaves room for the
 * table to grow by half.
 */
export function refblockCount(clusters: number, clusterSize: number, refcountBits: number, generous: boolean): number {
  const perTableCluster = clusterSize / 8;
  const perBlock = (clusterSize * 8) / refcountBits;
  let table = 0;
  let blocks = 0;
  let n = 0;
  let last: number;
  do {
    last = n;
    blocks = Math.ceil((clusters + table + blocks) / perBlock);
    table = Math.ceil(blocks / perTableCluster);
    n = clusters + blocks + table;
    if (n === last && generous) {
      clusters += Math.ceil(table / 2);
      n = 0;
      generous = false;
    }
  } while (n !== last);
  return blocks;
}
