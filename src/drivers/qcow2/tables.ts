import { BlockError } from '../../errors.js';
import type { Qcow2Header } from './header.js';
import { COMPRESSED, COPIED, compressedHost, compressedLength, EXT_L2_ALLOC_BITS, EXT_L2_ZERO_BITS, entryOffset, L1_RESERVED_HI, L1_RESERVED_LO, L2_RESERVED_HI, L2_RESERVED_LO, l2EntryBytes, SUBCLUSTERS, ZERO_FLAG } from './entries.js';
import type { L2Cache } from './l2-cache.js';

/** What one run of guest bytes maps to. */
export type Mapping =
  | { kind: 'data'; length: number; host: number }
  | { kind: 'zero'; length: number }
  | { kind: 'unallocated'; length: number }
  | { kind: 'compressed'; length: number; host: number; compressedSize: number; clusterStart: number };

const corrupt = (field: string, offset: number, message: string) =>
  new BlockError('ECORRUPT', `qcow2: ${field} ${message} (at byte ${offset})`, { field, offset });

/**
 * L1 and L2 tables of one image (or of one snapshot's L1): maps guest offsets to host
 * offsets, validating each entry before use. L2 tables live in a bounded LRU cache.
 */
export class ClusterMap {
  private readonly cs: number;
  private readonly l2Entries: number;
  private readonly entryBytes: number;
  private readonly subclusterSize: number;

  constructor(
    private readonly h: Qcow2Header,
    /** The L1 table; the writer changes it in place, a resize replaces it ({@link replaceL1}). */
    public l1: Buffer,
    private l1Offset: number,
    /** Bytes of the image file that may hold metadata and data (grows as clusters are allocated). */
    private readonly fileLimit: () => number,
    private readonly cache: L2Cache,
  ) {
    this.cs = h.clusterSize;
    this.entryBytes = l2EntryBytes(h.extendedL2);
    this.l2Entries = this.cs / this.entryBytes;
    this.subclusterSize = h.extendedL2 ? this.cs / SUBCLUSTERS : this.cs;
  }

  /** Points the map at a new L1 table (a resize grew it into new clusters). */
  replaceL1(l1: Buffer, l1Offset: number): void {
    this.l1 = l1;
    this.l1Offset = l1Offset;
  }

  /** Number of L2 tables the cache holds at most. */
  get l2CacheEntries(): number {
    return this.cache.capacity;
  }

  /** The run of guest bytes starting at `guest` (at most `max` bytes, never crossing an L2 table) with one mapping. */
  async map(guest: number, max: number): Promise<Mapping> {
    const cs = this.cs;
    const clusterIndex = Math.floor(guest / cs);
    const l1Index = Math.floor(clusterIndex / this.l2Entries);
    const tableEnd = (l1Index + 1) * this.l2Entries * cs;
    const limit = Math.min(guest + max, tableEnd);
    if (l1Index * 8 >= this.l1.length) return { kind: 'unallocated', length: limit - guest };
    const hi = this.l1.readUInt32BE(l1Index * 8);
    const lo = this.l1.readUInt32BE(l1Index * 8 + 4);
    const at = this.l1Offset + l1Index * 8;
    if (hi & L1_RESERVED_HI || lo & L1_RESERVED_LO) throw corrupt('L1 entry', at, 'has reserved bits set');
    const l2Offset = entryOffset(hi, lo);
    if (l2Offset === 0) return { kind: 'unallocated', length: limit - guest };
    if (l2Offset % cs !== 0) throw corrupt('L1 entry', at, `points to an unaligned L2 table at ${l2Offset}`);
    if (l2Offset + cs > this.fileLimit()) throw corrupt('L1 entry', at, `points to an L2 table at ${l2Offset} beyond the end of the file`);
    const l2 = await this.cache.get(l2Offset);

    const first = this.entry(l2, l2Offset, guest, limit);
    let pos = guest + first.length;
    if (first.kind === 'compressed') return first;
    // Standard entries that plainly continue the run are read without a Mapping each; any
    // other entry (another kind, reserved bits, corruption) goes through entry(), as before.
    const fast = !this.h.extendedL2;
    const expectZero = first.kind === 'zero';
    const expectUnallocated = first.kind === 'unallocated';
    const dataBase = first.kind === 'data' ? first.host - guest : -1;
    while (pos < limit) {
      if (fast) {
        const e = (Math.floor(pos / cs) % this.l2Entries) * 8;
        const hi = l2.readUInt32BE(e);
        const lo = l2.readUInt32BE(e + 4);
        let same = false;
        if (expectUnallocated) same = hi === 0 && lo === 0;
        else if (!(hi & (COMPRESSED | L2_RESERVED_HI) || lo & L2_RESERVED_LO)) {
          const host = entryOffset(hi, lo);
          if (expectZero) same = (lo & ZERO_FLAG) !== 0 && host % cs === 0;
          else same = !(lo & ZERO_FLAG) && host !== 0 && host === dataBase + pos;
        }
        if (same) {
          pos += Math.min(cs, limit - pos);
          continue;
        }
      }
      const m = this.entry(l2, l2Offset, pos, limit);
      if (!continues(first, m, pos - guest)) break;
      pos += m.length;
    }
    first.length = Math.min(pos, limit) - guest;
    return first;
  }

  /**
   * The host offset of [guest, guest+length) when it is one run of data clusters contiguous on
   * the host, inside one L2 table that is cached; else -1 (then {@link map} decides, and reports
   * any corruption). Synchronous, no allocation: the read path's common case (standard L2 entries).
   */
  dataRunNow(guest: number, length: number): number {
    const cs = this.cs;
    if (this.h.extendedL2 || length <= 0) return -1;
    const span = this.l2Entries * cs;
    const l1Index = Math.floor(guest / span);
    if (Math.floor((guest + length - 1) / span) !== l1Index || l1Index * 8 + 8 > this.l1.length) return -1;
    const hi1 = this.l1.readUInt32BE(l1Index * 8);
    const lo1 = this.l1.readUInt32BE(l1Index * 8 + 4);
    if (hi1 & L1_RESERVED_HI || lo1 & L1_RESERVED_LO) return -1;
    const l2Offset = entryOffset(hi1, lo1);
    if (l2Offset === 0 || l2Offset % cs !== 0 || l2Offset + cs > this.fileLimit()) return -1;
    const l2 = this.cache.peek(l2Offset);
    if (l2 === undefined) return -1;
    const first = guest - (guest % cs);
    const end = guest + length;
    const dataFile = this.h.hasDataFile;
    let base = -1;
    for (let g = first; g < end; g += cs) {
      const e = (Math.floor(g / cs) % this.l2Entries) * this.entryBytes;
      const hi = l2.readUInt32BE(e);
      const lo = l2.readUInt32BE(e + 4);
      // Compressed, zero, reserved bits: not a plain data cluster (map tells which, or what is corrupt).
      if (hi & (COMPRESSED | L2_RESERVED_HI) || lo & (ZERO_FLAG | L2_RESERVED_LO)) return -1;
      const host = entryOffset(hi, lo);
      if (host % cs !== 0 || (host === 0 && !(dataFile && hi & COPIED))) return -1;
      if (base < 0) base = host;
      else if (host !== base + (g - first)) return -1;
    }
    return base + (guest - first);
  }

  /** Mapping of the (sub)cluster containing `pos`, from `pos` to the end of that (sub)cluster. */
  private entry(l2: Buffer, l2Offset: number, pos: number, limit: number): Mapping {
    const cs = this.cs;
    const index = Math.floor(pos / cs) % this.l2Entries;
    const e = index * this.entryBytes;
    const at = l2Offset + e;
    const hi = l2.readUInt32BE(e);
    const lo = l2.readUInt32BE(e + 4);
    const clusterStart = Math.floor(pos / cs) * cs;
    if (hi & COMPRESSED) {
      // Compressed: offset and sector count share the low 62 bits.
      const host = compressedHost(hi, lo, this.h.clusterBits);
      const compressedSize = compressedLength(hi, lo, this.h.clusterBits);
      if (host === 0 || host >= this.fileLimit()) throw corrupt('L2 entry', at, `points to compressed data at ${host} outside the file`);
      if (this.h.extendedL2 && (l2.readUInt32BE(e + EXT_L2_ZERO_BITS) || l2.readUInt32BE(e + EXT_L2_ALLOC_BITS))) {
        throw corrupt('L2 entry', at, 'has a subcluster bitmap on a compressed cluster');
      }
      return { kind: 'compressed', length: Math.min(clusterStart + cs, limit) - pos, host, compressedSize, clusterStart };
    }
    if (hi & L2_RESERVED_HI || lo & L2_RESERVED_LO) throw corrupt('L2 entry', at, 'has reserved bits set');
    const host = entryOffset(hi, lo);
    if (host % cs !== 0) throw corrupt('L2 entry', at, `points to an unaligned cluster at ${host}`);
    // Offset 0 means unallocated, except in an external data file where 0 is a real offset;
    // there every allocated cluster has the COPIED flag (refcount 1), as QEMU relies on.
    const hostValid = host !== 0 || (this.h.hasDataFile && (hi & COPIED) !== 0);
    if (!this.h.extendedL2) {
      const end = Math.min(clusterStart + cs, limit) - pos;
      if (lo & ZERO_FLAG) {
        if (this.h.version < 3) throw corrupt('L2 entry', at, 'has the zero flag in a version 2 image');
        return { kind: 'zero', length: end };
      }
      if (!hostValid) return { kind: 'unallocated', length: end };
      return { kind: 'data', length: end, host: host + (pos - clusterStart) };
    }
    if (lo & ZERO_FLAG) throw corrupt('L2 entry', at, 'has reserved bit 0 set in an image with extended L2 entries');
    const alloc = l2.readUInt32BE(e + EXT_L2_ALLOC_BITS);
    const zero = l2.readUInt32BE(e + EXT_L2_ZERO_BITS);
    if (alloc & zero) throw corrupt('L2 bitmap', at + 8, 'marks a subcluster both allocated and zero');
    if (alloc !== 0 && !hostValid) throw corrupt('L2 entry', at, 'has allocated subclusters but no cluster offset');
    const sc = this.subclusterSize;
    const sub = Math.floor((pos - clusterStart) / sc);
    const end = Math.min(clusterStart + (sub + 1) * sc, limit) - pos;
    const bit = 1 << sub;
    if (zero & bit) return { kind: 'zero', length: end };
    if (alloc & bit) return { kind: 'data', length: end, host: host + (pos - clusterStart) };
    return { kind: 'unallocated', length: end };
  }
}

/** Whether mapping `m` continues run `first` (same kind, contiguous host offsets). */
function continues(first: Mapping, m: Mapping, distance: number): boolean {
  if (first.kind !== m.kind) return false;
  if (first.kind === 'data' && m.kind === 'data') return m.host === first.host + distance;
  return first.kind === 'zero' || first.kind === 'unallocated';
}
