/**
 * The bit layout of qcow2 table entries (L1, L2 standard and compressed, extended L2 bitmaps,
 * refcount table, bitmap table), in one place. An entry is read as two big-endian 32-bit words
 * (`hi` = bits 32-63, `lo` = bits 0-31): plain numbers, no BigInt and no object on the I/O path.
 * JS bitwise results are signed, hence the `>>> 0` where a word leaves these functions.
 */

/** Bit 63 (QCOW_OFLAG_COPIED), in the high word: the refcount of the cluster is exactly 1. */
export const COPIED = 0x80000000;
/** Bit 62 (QCOW_OFLAG_COMPRESSED), in the high word: an L2 entry of compressed data. */
export const COMPRESSED = 0x40000000;
/** Bit 0 (QCOW_OFLAG_ZERO), in the low word: a standard L2 entry that reads as zeros (v3). */
export const ZERO_FLAG = 1;

/** Host offset bits 9-55 of L1, L2 and bitmap table entries (L1E/L2E_OFFSET_MASK), per word. */
export const OFFSET_HI = 0x00ffffff;
export const OFFSET_LO = 0xfffffe00;
/** Reserved bits of an L1 entry: 56-62 and 0-8. */
export const L1_RESERVED_HI = 0x7f000000;
export const L1_RESERVED_LO = 0x000001ff;
/** Reserved bits of a standard L2 entry: 56-61 and 1-8. */
export const L2_RESERVED_HI = 0x3f000000;
export const L2_RESERVED_LO = 0x000001fe;
/** Reserved bits of a refcount table entry: 0-8. */
export const REFTABLE_RESERVED_LO = 0x000001ff;
/** Reserved bits of a bitmap table entry: 56-63 and 1-8. */
export const BITMAP_TABLE_RESERVED_HI = 0xff000000;
export const BITMAP_TABLE_RESERVED_LO = 0x000001fe;
/** Bit 0 of a bitmap table entry without a cluster: the whole range reads as ones. */
export const BITMAP_ALL_ONES = 1;

/** Bytes of one L2 entry: 8, or 16 with extended L2 (the entry, then the zero and allocation bitmaps). */
export function l2EntryBytes(extendedL2: boolean): number {
  return extendedL2 ? 16 : 8;
}
/** Byte offsets, within an extended L2 entry, of its zero bitmap (bits 32-63) and allocation bitmap (bits 0-31). */
export const EXT_L2_ZERO_BITS = 8;
export const EXT_L2_ALLOC_BITS = 12;
/** Subclusters per cluster with extended L2 entries. */
export const SUBCLUSTERS = 32;

/** The host offset of an L1, standard L2 or bitmap table entry (flags and reserved bits masked off). */
export function entryOffset(hi: number, lo: number): number {
  return (hi & OFFSET_HI) * 2 ** 32 + ((lo & OFFSET_LO) >>> 0);
}

/** The offset of a refcount block in a refcount table entry (its low 9 bits are reserved). */
export function reftableEntryOffset(hi: number, lo: number): number {
  return (hi >>> 0) * 2 ** 32 + ((lo & ~REFTABLE_RESERVED_LO) >>> 0);
}

/** The high word of an entry pointing to `host` (< 2^56), with or without COPIED. */
export function offsetHiWord(host: number, copied: boolean): number {
  return ((copied ? COPIED : 0) | Math.floor(host / 2 ** 32)) >>> 0;
}

/** The low word of an entry pointing to `host` (cluster aligned), with or without the zero flag. */
export function offsetLoWord(host: number, zero: boolean): number {
  return ((host >>> 0) | (zero ? ZERO_FLAG : 0)) >>> 0;
}

/** The high word with COPIED set or cleared. */
export function setCopied(hi: number, copied: boolean): number {
  return (copied ? hi | COPIED : hi & ~COPIED) >>> 0;
}

/** An entry as a 64-bit value (for messages: qemu-img prints entries in hex). */
export function entryHex(hi: number, lo: number): string {
  return ((hi >>> 0) * 2 ** 32 + (lo >>> 0)).toString(16);
}

/*
 * Compressed L2 entries: bits 0..x-1 the host byte offset, bits x..61 the number of additional
 * 512-byte sectors, x = 62 - (cluster_bits - 8). x is 49..61, so the sector field lies in the
 * high word, from bit x - 32.
 */

/** Bit where a compressed entry's sector count starts, in the high word. */
function sectorShift(clusterBits: number): number {
  return 62 - (clusterBits - 8) - 32;
}

/** Host byte offset of the compressed data. */
export function compressedHost(hi: number, lo: number, clusterBits: number): number {
  return (hi & ((1 << sectorShift(clusterBits)) - 1)) * 2 ** 32 + (lo >>> 0);
}

/** 512-byte sectors the compressed data touches (the field holds this minus one). */
export function compressedSectors(hi: number, clusterBits: number): number {
  return ((hi >>> sectorShift(clusterBits)) & ((1 << (clusterBits - 8)) - 1)) + 1;
}

/** Bytes from the host offset to the end of the last sector: what a reader must read. */
export function compressedLength(hi: number, lo: number, clusterBits: number): number {
  return compressedSectors(hi, clusterBits) * 512 - (compressedHost(hi, lo, clusterBits) % 512);
}

/** Sectors touched by `bytes` bytes of compressed data at `host`. */
export function sectorsSpanned(host: number, bytes: number): number {
  return Math.floor((host + bytes - 1) / 512) - Math.floor(host / 512) + 1;
}

/** The high word of a compressed entry for `bytes` bytes at `host` (the low word is `host >>> 0`). */
export function compressedHiWord(host: number, bytes: number, clusterBits: number): number {
  const sectors = sectorsSpanned(host, bytes);
  return (COMPRESSED | ((sectors - 1) << sectorShift(clusterBits)) | Math.floor(host / 2 ** 32)) >>> 0;
}

/** A standard entry as one 64-bit value (the image creator builds tables of bigints). */
export function copiedEntry(host: number): bigint {
  return BigInt(host) | (BigInt(COPIED) << 32n);
}

/** The host offset of a 64-bit entry. */
export function bigEntryOffset(entry: bigint): number {
  return entryOffset(Number(entry >> 32n), Number(entry & 0xffffffffn));
}
