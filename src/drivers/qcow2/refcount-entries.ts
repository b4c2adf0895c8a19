/**
 * Refcount entries of width 2^order bits (qcow2 refcount_order 0..6), packed into refcount
 * blocks: widths below a byte are stored least significant bits first, wider ones big-endian.
 */
import { BlockError } from '../../errors.js';

/** Entries one refcount block of `clusterSize` bytes holds. */
export function entriesPerBlock(clusterSize: number, order: number): number {
  return (clusterSize * 8) / 2 ** order;
}

/** Largest refcount an entry can hold (2^bits - 1; for 64 bits, beyond what a number holds exactly). */
export function refcountMax(order: number): number {
  return 2 ** 2 ** order - 1;
}

/** Largest refcount the writer stores in an entry: the width's maximum, capped at 2^53 - 1 for 64 bits (exact in a number). */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : refcountMax(order);
}

/** Reads entry `index` of a refcount block. 64-bit values above 2^53 lose precision (they are corrupt anyway). */
export function readEntry(block: Uint8Array, index: number, order: number): number {
  // Shifts, not `**`: a variable exponent is a call to pow per entry (order is 0..6).
  const bits = 1 << order;
  if (bits < 8) {
    const bit = index * bits;
    return (block[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
  }
  const at = (index * bits) / 8;
  // Byte arithmetic, no DataView: a snapshot of a large image reads one entry per cluster.
  if (bits === 8) return block[at];
  if (bits === 16) return (block[at] << 8) | block[at + 1];
  const hi = block[at] * 2 ** 24 + ((block[at + 1] << 16) | (block[at + 2] << 8) | block[at + 3]);
  if (bits === 32) return hi;
  return hi * 2 ** 32 + block[at + 4] * 2 ** 24 + ((block[at + 5] << 16) | (block[at + 6] << 8) | block[at + 7]);
}

/** Writes entry `index` of a refcount block (`value` must fit the width). */
export function writeEntry(block: Uint8Array, index: number, order: number, value: number): void {
  const bits = 1 << order;
  if (bits < 8) {
    const bit = index * bits;
    const mask = ((1 << bits) - 1) << (bit & 7);
    block[bit >> 3] = (block[bit >> 3] & ~mask) | ((value << (bit & 7)) & mask);
    return;
  }
  const at = (index * bits) / 8;
  if (bits === 8) block[at] = value;
  else if (bits === 16) {
    block[at] = value >>> 8;
    block[at + 1] = value & 0xff;
  } else if (bits === 32) put32(block, at, value);
  else {
    put32(block, at, Math.floor(value / 2 ** 32));
    put32(block, at + 4, value % 2 ** 32);
  }
}

/** Big-endian 32-bit store of `value` (0 … 2^32 - 1) at `at`. */
function put32(block: Uint8Array, at: number, value: number): void {
  block[at] = value >>> 24;
  block[at + 1] = (value >>> 16) & 0xff;
  block[at + 2] = (value >>> 8) & 0xff;
  block[at + 3] = value & 0xff;
}

/** Byte range of a block that holds entry `index` (what a write of that one entry must cover). */
export function entryBytes(index: number, order: number): { start: number; end: number } {
  const bits = 2 ** order;
  const start = Math.floor((index * bits) / 8);
  return { start, end: start + Math.max(1, bits / 8) };
}

/**
 * In-memory refcounts of every host cluster (QEMU's check builds one to compare with the
 * file's). Grows on demand; counts saturate at the entry width's maximum.
 */
/** ECORRUPT for refcount table entry `b` (at `tableOffset + 8b`) that cannot be used, and `why`. */
export function refcountTableEntryError(b: number, tableOffset: number, why: string): BlockError {
  return new BlockError('ECORRUPT', `qcow2: refcount table entry ${b} ${why}`, { field: 'refcount table', offset: tableOffset + b * 8 });
}

export class RefcountArray {
  private counts: Float64Array;
  /** Clusters covered (QEMU's nb_clusters); may grow past the end of the file. */
  size: number;

  constructor(size: number) {
    this.size = size;
    this.counts = new Float64Array(Math.max(size, 16));
  }

  get(cluster: number): number {
    return cluster < this.size ? this.counts[cluster] : 0;
  }

  set(cluster: number, value: number): void {
    this.grow(cluster + 1);
    this.counts[cluster] = value;
  }

  /** Makes the array cover at least `size` clusters (new ones count 0). */
  grow(size: number): void {
    if (size <= this.size) return;
    if (size > this.counts.length) {
      const next = new Float64Array(Math.max(size, this.counts.length * 2));
      next.set(this.counts);
      this.counts = next;
    }
    this.size = size;
  }

  /** Entries [first, first + count) serialized as one refcount block of `clusterSize` bytes. */
  block(first: number, count: number, clusterSize: number, order: number): Uint8Array {
    const out = new Uint8Array(clusterSize);
    for (let i = 0; i < count; i++) {
      const v = this.get(first + i);
      if (v !== 0) writeEntry(out, i, order, v);
    }
    return out;
  }
}
