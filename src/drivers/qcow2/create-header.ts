import * as L from './limits.js';

/** What the header cluster of a new image says. */
export interface HeaderFields {
  version: 2 | 3;
  clusterBits: number;
  size: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  refcountOrder: number;
  lazyRefcounts: boolean;
  extendedL2: boolean;
  compressionType: 'zlib' | 'zstd';
  dataFile?: string;
  dataFileRaw: boolean;
  backingFile?: string;
  backingFormat?: string;
}

/** Feature name table entries, in the order QEMU writes them: [type, bit, name]. */
const FEATURE_NAMES: [number, number, string][] = [
  [0, 0, 'dirty bit'],
  [0, 1, 'corrupt bit'],
  [0, 2, 'external data file'],
  [0, 3, 'compression type'],
  [0, 4, 'extended L2 entries'],
  [1, 0, 'lazy refcounts'],
  [2, 0, 'bitmaps'],
  [2, 1, 'raw external data'],
];

/** Length of a v3 header: the 105 bytes up to the compression type, padded to 8 as QEMU does. */
const V3_HEADER_LENGTH = 112;
const V2_HEADER_LENGTH = 72;

/**
 * The header cluster of a new image: header fields, then the extensions QEMU writes (backing
 * format, external data file, feature name table for v3), the end marker, and the backing file
 * name right after them.
 */
export function buildHeaderCluster(h: HeaderFields): Uint8Array {
  const clusterSize = 2 ** h.clusterBits;
  const b = Buffer.alloc(clusterSize);
  const u64 = (value: number, at: number) => b.writeBigUInt64BE(BigInt(value), at);
  b.writeUInt32BE(L.QCOW2_MAGIC, 0);
  b.writeUInt32BE(h.version, 4);
  b.writeUInt32BE(h.clusterBits, 20);
  u64(h.size, 24);
  b.writeUInt32BE(h.l1Size, 36);
  u64(h.l1TableOffset, 40);
  u64(h.refcountTableOffset, 48);
  b.writeUInt32BE(h.refcountTableClusters, 56);
  let at = V2_HEADER_LENGTH;
  if (h.version === 3) {
    let incompatible = 0;
    if (h.dataFile !== undefined) incompatible |= L.INCOMPAT_DATA_FILE;
    if (h.compressionType === 'zstd') incompatible |= L.INCOMPAT_COMPRESSION;
    if (h.extendedL2) incompatible |= L.INCOMPAT_EXTL2;
    u64(incompatible, 72);
    u64(h.lazyRefcounts ? 1 : 0, 80);
    u64(h.dataFileRaw ? L.AUTOCLEAR_DATA_FILE_RAW : 0, 88);
    b.writeUInt32BE(h.refcountOrder, 96);
    b.writeUInt32BE(V3_HEADER_LENGTH, 100);
    b[104] = h.compressionType === 'zstd' ? 1 : 0;
    at = V3_HEADER_LENGTH;
  }
  const extension = (type: number, data: Uint8Array) => {
    const padded = Math.ceil(data.length / 8) * 8;
    if (at + 8 + padded > clusterSize) throw new RangeError('header extensions do not fit in the header cluster');
    b.writeUInt32BE(type, at);
    b.writeUInt32BE(data.length, at + 4);
    b.set(data, at + 8);
    at += 8 + padded;
  };
  if (h.backingFormat !== undefined) extension(L.EXT_BACKING_FORMAT, Buffer.from(h.backingFormat));
  if (h.dataFile !== undefined) extension(L.EXT_DATA_FILE, Buffer.from(h.dataFile));
  // QEMU writes the feature name table only into clusters larger than 4 KiB (it leaves small
  // header clusters room for other extensions); measured with qemu-img 7.2.
  if (h.version === 3 && clusterSize > 4096) {
    const table = Buffer.alloc(FEATURE_NAMES.length * 48);
    FEATURE_NAMES.forEach(([type, bit, name], i) => {
      table[i * 48] = type;
      table[i * 48 + 1] = bit;
      table.write(name, i * 48 + 2);
    });
    extension(L.EXT_FEATURE_TABLE, table);
  }
  extension(L.EXT_END, new Uint8Array(0));
  if (h.backingFile !== undefined) {
    const name = Buffer.from(h.backingFile);
    if (at + name.length > clusterSize) throw new RangeError('the backing file name does not fit in the header cluster');
    u64(at, 8);
    b.writeUInt32BE(name.length, 16);
    b.set(name, at);
  }
  return b;
}
