import { BlockError } from '../../errors.js';
import * as L from './limits.js';

/** A parsed and validated qcow2 header (docs/interop/qcow2.txt). */
export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  clusterSize: number;
  size: number;
  backingFile?: string;
  backingFormat?: string;
  dataFile?: string;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatible: number;
  compatible: number;
  autoclear: number;
  refcountOrder: number;
  headerLength: number;
  compressionType: 'zlib' | 'zstd';
  extendedL2: boolean;
  /** Guest data lives in an external data file (incompatible bit 2). */
  hasDataFile: boolean;
  /** Feature names from the feature name table: "incompatible:5" → name. */
  featureNames: Map<string, string>;
}

const corrupt = (field: string, offset: number, message: string) =>
  new BlockError('ECORRUPT', `qcow2 header: ${field} ${message} (at byte ${offset})`, { field, offset });

/** Reads a big-endian 64-bit value as a number, refusing values beyond 2^53. */
export function u64(buf: Uint8Array, at: number, field: string): number {
  const v = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const hi = v.readUInt32BE(at);
  const lo = v.readUInt32BE(at + 4);
  if (hi > 0x1fffff) throw corrupt(field, at, `is too large (${v.readBigUInt64BE(at)})`);
  return hi * 2 ** 32 + lo;
}

/**
 * Parses and validates the header cluster. `fileSize` bounds every offset; the buffer holds
 * at least the first cluster (or the whole file if smaller).
 */
export function parseHeader(buf: Uint8Array, fileSize: number): Qcow2Header {
  const v = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.length < 72) throw corrupt('magic', 0, 'missing: file too short for a qcow2 header');
  if (v.readUInt32BE(0) !== L.QCOW2_MAGIC) throw corrupt('magic', 0, 'is not QFI\\xfb');
  const version = v.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new BlockError('ENOTSUP', `qcow2 version ${version} is not supported`, { field: 'version', offset: 4 });
  const clusterBits = v.readUInt32BE(20);
  if (clusterBits < L.MIN_CLUSTER_BITS || clusterBits > L.MAX_CLUSTER_BITS) {
    throw corrupt('cluster_bits', 20, `${clusterBits} is outside ${L.MIN_CLUSTER_BITS}..${L.MAX_CLUSTER_BITS}`);
  }
  const clusterSize = 2 ** clusterBits;
  const hiSize = v.readUInt32BE(24);
  if (hiSize > 0x1fffff) {
    throw new BlockError('ENOTSUP', `qcow2 virtual size ${v.readBigUInt64BE(24)} exceeds 2^53 bytes, the largest offset this library addresses exactly`, {
      field: 'size',
      offset: 24,
    });
  }
  const size = hiSize * 2 ** 32 + v.readUInt32BE(28);
  const cryptMethod = v.readUInt32BE(32);
  const h: Qcow2Header = {
    version,
    clusterBits,
    clusterSize,
    size,
    cryptMethod,
    l1Size: v.readUInt32BE(36),
    l1TableOffset: u64(buf, 40, 'l1_table_offset'),
    refcountTableOffset: u64(buf, 48, 'refcount_table_offset'),
    refcountTableClusters: v.readUInt32BE(56),
    nbSnapshots: v.readUInt32BE(60),
    snapshotsOffset: u64(buf, 64, 'snapshots_offset'),
    incompatible: 0,
    compatible: 0,
    autoclear: 0,
    refcountOrder: 4,
    headerLength: 72,
    compressionType: 'zlib',
    extendedL2: false,
    hasDataFile: false,
    featureNames: new Map(),
  };
  if (version === 3) {
    if (v.length < 104) throw corrupt('header_length', 100, 'is beyond the end of the file');
    // Unknown compatible and autoclear bits (words at 80 and 88) are harmless for reading.
    const incHi = v.readUInt32BE(72);
    h.incompatible = v.readUInt32BE(76);
    h.compatible = v.readUInt32BE(84);
    h.autoclear = v.readUInt32BE(92);
    if (incHi !== 0) throw new BlockError('ENOTSUP', `qcow2: unknown incompatible feature bits ${incHi.toString(16)}00000000`, { field: 'incompatible_features', offset: 72 });
    h.refcountOrder = v.readUInt32BE(96);
    h.headerLength = v.readUInt32BE(100);
    if (h.headerLength < 104) throw corrupt('header_length', 100, `${h.headerLength} is shorter than 104`);
    if (h.headerLength > clusterSize || h.headerLength > v.length) throw corrupt('header_length', 100, `${h.headerLength} is beyond the header cluster`);
    if (h.headerLength > 104) {
      const type = v[104];
      if (type === 1) h.compressionType = 'zstd';
      else if (type !== 0) throw new BlockError('ENOTSUP', `qcow2: unknown compression type ${type}`, { field: 'compression_type', offset: 104 });
      if (type !== 0 && !(h.incompatible & L.INCOMPAT_COMPRESSION)) {
        throw corrupt('compression_type', 104, `is ${type} but the compression type feature bit is not set`);
      }
    }
    if (h.refcountOrder > 6) throw corrupt('refcount_order', 96, `${h.refcountOrder} is above 6`);
  }
  // Extensions follow the header and end in the first cluster.
  let at = h.headerLength;
  while (at + 8 <= Math.min(v.length, clusterSize)) {
    const type = v.readUInt32BE(at);
    const len = v.readUInt32BE(at + 4);
    if (type === L.EXT_END) break;
    const data = at + 8;
    if (data + len > Math.min(v.length, clusterSize)) throw corrupt('header extension', at, `of ${len} bytes runs past the header cluster`);
    // A name ends at its first NUL, as QEMU reads it (g_strndup).
    const text = () => v.toString('utf8', data, data + len).split('\0', 1)[0];
    if (type === L.EXT_BACKING_FORMAT) h.backingFormat = text();
    else if (type === L.EXT_DATA_FILE) h.dataFile = text();
    else if (type === L.EXT_FEATURE_TABLE) {
      for (let e = data; e + 48 <= data + len; e += 48) {
        const kind = ['incompatible', 'compatible', 'autoclear'][v[e]] ?? `type${v[e]}`;
        h.featureNames.set(`${kind}:${v[e + 1]}`, v.toString('utf8', e + 2, e + 48).replace(/\0+$/, ''));
      }
    }
    // Bitmaps, crypto headers and unknown extensions are skipped.
    at = data + Math.ceil(len / 8) * 8;
  }
  if (h.cryptMethod !== 0) {
    throw new BlockError('ENOTSUP', `qcow2: encrypted images are not supported (crypt_method ${h.cryptMethod})`, { field: 'crypt_method', offset: 32 });
  }
  const unknown = h.incompatible & ~L.KNOWN_INCOMPAT;
  if (unknown) {
    const bit = Math.log2(unknown & -unknown);
    const name = h.featureNames.get(`incompatible:${bit}`);
    throw new BlockError('ENOTSUP', `qcow2: unsupported incompatible feature bit ${bit}${name ? ` (${name})` : ''}`, {
      field: 'incompatible_features',
      offset: 76,
    });
  }
  h.extendedL2 = (h.incompatible & L.INCOMPAT_EXTL2) !== 0;
  h.hasDataFile = (h.incompatible & L.INCOMPAT_DATA_FILE) !== 0;
  if (h.extendedL2 && clusterBits < 14) throw corrupt('cluster_bits', 20, `${clusterBits} is too small for extended L2 entries (minimum 14)`);

  // Backing file name.
  const backingOffset = u64(buf, 8, 'backing_file_offset');
  const backingSize = v.readUInt32BE(16);
  if (backingOffset !== 0) {
    if (backingSize > L.MAX_BACKING_NAME) throw corrupt('backing_file_size', 16, `${backingSize} is longer than ${L.MAX_BACKING_NAME} bytes`);
    if (backingOffset + backingSize > Math.min(clusterSize, v.length)) throw corrupt('backing_file_offset', 8, `${backingOffset} is outside the header cluster`);
    h.backingFile = v.toString('utf8', backingOffset, backingOffset + backingSize).split('\0', 1)[0];
  }

  // Tables: aligned, bounded, inside the file.
  const align = (field: string, at2: number, off: number) => {
    if (off % clusterSize !== 0) throw corrupt(field, at2, `${off} is not aligned to the cluster size ${clusterSize}`);
  };
  const l2Entries = clusterSize / (h.extendedL2 ? 16 : 8);
  const needL1 = Math.ceil(h.size / (clusterSize * l2Entries));
  if (h.l1Size * 8 > L.MAX_L1_BYTES) throw corrupt('l1_size', 36, `${h.l1Size} entries exceed the limit of ${L.MAX_L1_BYTES} bytes`);
  if (h.l1Size < needL1) throw corrupt('l1_size', 36, `${h.l1Size} is too small for the virtual size ${h.size} (needs ${needL1})`);
  if (h.l1Size > 0) {
    align('l1_table_offset', 40, h.l1TableOffset);
    if (h.l1TableOffset === 0 || h.l1TableOffset + h.l1Size * 8 > fileSize) {
      throw corrupt('l1_table_offset', 40, `${h.l1TableOffset} (+${h.l1Size * 8} bytes) is outside the file (${fileSize} bytes)`);
    }
  }
  align('refcount_table_offset', 48, h.refcountTableOffset);
  if (h.refcountTableClusters * clusterSize > L.MAX_REFTABLE_BYTES) {
    throw corrupt('refcount_table_clusters', 56, `${h.refcountTableClusters} clusters exceed the limit of ${L.MAX_REFTABLE_BYTES} bytes`);
  }
  if (h.nbSnapshots > L.MAX_SNAPSHOTS) throw corrupt('nb_snapshots', 60, `${h.nbSnapshots} is above ${L.MAX_SNAPSHOTS}`);
  if (h.nbSnapshots > 0) {
    align('snapshots_offset', 64, h.snapshotsOffset);
    if (h.snapshotsOffset >= fileSize) throw corrupt('snapshots_offset', 64, `${h.snapshotsOffset} is beyond the end of the file`);
  }
  return h;
}

/** Names of the feature bits that are set, for info. */
export function featureList(h: Qcow2Header): Record<string, string[]> {
  const list = (kind: string, bits: number, known: Record<number, string>) => {
    const out: string[] = [];
    for (let b = 0; b < 32; b++) if (bits & (1 << b)) out.push(known[b] ?? h.featureNames.get(`${kind}:${b}`) ?? `bit ${b}`);
    return out;
  };
  return {
    incompatible: list('incompatible', h.incompatible, { 0: 'dirty', 1: 'corrupt', 2: 'external data file', 3: 'compression type', 4: 'extended L2' }),
    compatible: list('compatible', h.compatible, { 0: 'lazy refcounts' }),
    autoclear: list('autoclear', h.autoclear, { 0: 'bitmaps', 1: 'raw external data' }),
  };
}
