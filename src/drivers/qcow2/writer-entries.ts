// How the qcow2 writer (writer.ts) reads one L2 entry of the active table when it plans a write.
import { BlockError } from '../../errors.js';
import { COMPRESSED, COPIED, compressedHost, compressedSectors, EXT_L2_ALLOC_BITS, EXT_L2_ZERO_BITS, entryOffset, l2EntryBytes, ZERO_FLAG } from './entries.js';
import type { WriterContext } from './writer-context.js';

/** Byte offset, in its L2 table, of the entry of the guest cluster at `g`. */
function entryIndex(c: WriterContext, g: number): number {
  const cs = c.h.clusterSize;
  const bytes = l2EntryBytes(c.h.extendedL2);
  return (Math.floor(g / cs) % (cs / bytes)) * bytes;
}

/** The entry of the guest cluster at `g`: the standard words, the host offset and (extended L2) the bitmaps. */
export function l2EntryAt(c: WriterContext, l2: Buffer, g: number) {
  const e = entryIndex(c, g);
  const hi = l2.readUInt32BE(e);
  const lo = l2.readUInt32BE(e + 4);
  const host = entryOffset(hi, lo);
  // In an external data file, offset 0 is a real offset (every entry there has COPIED).
  const hostValid = host !== 0 || (c.externalData && (hi & COPIED) !== 0);
  const ext = c.h.extendedL2;
  // A raw data file holds each guest cluster at its guest offset: a cluster mapped elsewhere is
  // not written in place but moved there (copied whole, then linked).
  const inRawPlace = !c.dataRaw || host === g - (g % c.h.clusterSize);
  return {
    e,
    hi,
    lo,
    host,
    owned: (hi & COPIED) !== 0 && !(hi & COMPRESSED) && hostValid && (ext || !(lo & ZERO_FLAG)) && inRawPlace,
    allocBits: ext ? l2.readUInt32BE(e + EXT_L2_ALLOC_BITS) : 0,
    zeroBits: ext ? l2.readUInt32BE(e + EXT_L2_ZERO_BITS) : 0,
    hostValid,
  };
}

/**
 * {@link l2EntryAt}'s `owned` for standard entries, without an object: the host offset of the
 * cluster at `g` if the active table owns it alone, else -1.
 */
export function ownedHost(c: WriterContext, l2: Buffer, g: number): number {
  const e = entryIndex(c, g);
  const hi = l2.readUInt32BE(e);
  const lo = l2.readUInt32BE(e + 4);
  if (!(hi & COPIED) || hi & COMPRESSED || lo & ZERO_FLAG) return -1;
  const host = entryOffset(hi, lo);
  if (host === 0 && !c.externalData) return -1;
  if (c.dataRaw && host !== g - (g % c.h.clusterSize)) return -1;
  return host;
}

/** Bits of the subclusters (of `sc` bytes) that [from, to) touches in the cluster at `g`. */
export function touchedBits(sc: number, g: number, from: number, to: number): { first: number; last: number; mask: number } {
  const first = Math.floor((from - g) / sc);
  const last = Math.floor((to - 1 - g) / sc);
  return { first, last, mask: (2 ** (last + 1) - 2 ** first) >>> 0 };
}

/** L2 table offset from the active L1 entry `index` (0: none); an unaligned one is corrupt. */
export function l1Entry(c: WriterContext, index: number): number {
  const off = entryOffset(c.l1.readUInt32BE(index * 8), c.l1.readUInt32BE(index * 8 + 4));
  if (off % c.h.clusterSize !== 0) {
    throw new BlockError('ECORRUPT', `qcow2: L1 entry ${index} points to an unaligned L2 table at ${off}`, {
      field: 'L1 entry',
      offset: c.l1Offset + index * 8,
    });
  }
  return off;
}

/** Releases the host cluster(s) the L2 entry at byte `e` of `l2` references (after the next table write-back). */
export function releaseEntry(c: WriterContext, l2: Buffer, e: number): void {
  const hi = l2.readUInt32BE(e);
  const lo = l2.readUInt32BE(e + 4);
  if (hi & COMPRESSED) {
    const host = compressedHost(hi, lo, c.h.clusterBits);
    c.refcounts.release(host - (host % 512), compressedSectors(hi, c.h.clusterBits) * 512);
    return;
  }
  const host = entryOffset(hi, lo);
  // Clusters of an external data file have no refcounts.
  if (host !== 0 && !c.externalData) c.refcounts.release(host, c.h.clusterSize);
}
