import { BlockError } from '../../errors.js';
import * as L from './limits.js';

/** A parsed and validated qcow2 header (docs/interop/qcow2.txt). */
export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  clusterSize: number;
  /** Virtual size in bytes, rounded down to whole 512-byte sectors as QEMU does. */
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
  /** The bitmaps extension, when the bitmaps autoclear bit says it is valid (else ignored, as QEMU does). */
  bitmaps?: { count: number; directoryOffset: number; directorySize: number };
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
 * Parses and validates the header cluster as QEMU's qcow2_do_open does, refusing what it
 * refuses. `fileSize` bounds every offset; the buffer holds at least the first cluster (or the
 * whole file if smaller: the rest of the cluster reads as zeros, as it does for QEMU).
 */
export function parseHeader(buf: Uint8Array, fileSize: number): Qcow2Header {
  let v = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.length < 72) throw corrupt('magic', 0, 'missing: file too short for a qcow2 header');
  if (v.readUInt32BE(0) !== L.QCOW2_MAGIC) throw corrupt('magic', 0, 'is not QFI\\xfb');
  const version = v.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new BlockError('ENOTSUP', `qcow2 version ${version} is not supported`, { field: 'version', offset: 4 });
  const clusterBits = v.readUInt32BE(20);
  if (clusterBits < L.MIN_CLUSTER_BITS || clusterBits > L.MAX_CLUSTER_BITS) {
    throw corrupt('cluster_bits', 20, `${clusterBits} is outside ${L.MIN_CLUSTER_BITS}..${L.MAX_CLUSTER_BITS}`);
  }
  const clusterSize = 2 ** clusterBits;
  if (v.length < clusterSize) {
    // A file shorter than its header cluster: QEMU reads zeros past the end.
    const padded = Buffer.alloc(clusterSize);
    v.copy(padded);
    v = padded;
  }
  const hiSize = v.readUInt32BE(24);
  if (hiSize > 0x1fffff) {
    throw new BlockError('ENOTSUP', `qcow2 virtual size ${v.readBigUInt64BE(24)} exceeds 2^53 bytes, the largest offset this library addresses exactly`, {
      field: 'size',
      offset: 24,
    });
  }
  const headerSize = hiSize * 2 ** 32 + v.readUInt32BE(28);
  const cryptMethod = v.readUInt32BE(32);
  const h: Qcow2Header = {
    version,
    clusterBits,
    clusterSize,
    // QEMU counts whole sectors: a size that is not a multiple of 512 is rounded down.
    size: headerSize - (headerSize % L.SECTOR_SIZE),
    cryptMethod,
    l1Size: v.readUInt32BE(36),
    l1TableOffset: u64(v, 40, 'l1_table_offset'),
    refcountTableOffset: u64(v, 48, 'refcount_table_offset'),
    refcountTableClusters: v.readUInt32BE(56),
    nbSnapshots: v.readUInt32BE(60),
    snapshotsOffset: u64(v, 64, 'snapshots_offset'),
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
    // Unknown compatible and autoclear bits (words at 80 and 88) are harmless for reading.
    const incHi = v.readUInt32BE(72);
    h.incompatible = v.readUInt32BE(76);
    h.compatible = v.readUInt32BE(84);
    h.autoclear = v.readUInt32BE(92);
    if (incHi !== 0) throw new BlockError('ENOTSUP', `qcow2: unknown incompatible feature bits ${incHi.toString(16)}00000000`, { field: 'incompatible_features', offset: 72 });
    h.refcountOrder = v.readUInt32BE(96);
    h.headerLength = v.readUInt32BE(100);
    if (h.headerLength < 104) throw corrupt('header_length', 100, `${h.headerLength} is shorter than 104`);
    if (h.headerLength > clusterSize) throw corrupt('header_length', 100, `${h.headerLength} is beyond the header cluster`);
  }
  const backingOffset = u64(v, 8, 'backing_file_offset');
  if (backingOffset > clusterSize) throw corrupt('backing_file_offset', 8, `${backingOffset} is outside the header cluster (${clusterSize} bytes)`);

  // The compression type byte exists from header_length 105 on; the feature bit must be set
  // exactly when the type is not zlib (QEMU validate_compression_type, both ways).
  const type = h.headerLength > 104 ? v[104] : 0;
  if (type > 1) throw new BlockError('ENOTSUP', `qcow2: unknown compression type ${type}`, { field: 'compression_type', offset: 104 });
  const bit = (h.incompatible & L.INCOMPAT_COMPRESSION) !== 0;
  if (type === 0 && bit) throw corrupt('incompatible_features', 76, 'has the compression type bit (3) set but compression_type is zlib (0)');
  if (type !== 0 && !bit) throw corrupt('compression_type', 104, `is ${type} but the compression type feature bit is not set`);
  if (type === 1) h.compressionType = 'zstd';
  if (h.refcountOrder > 6) throw corrupt('refcount_order', 96, `${h.refcountOrder} is above 6`);

  parseExtensions(v, h, backingOffset || clusterSize);

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
  if (h.autoclear & L.AUTOCLEAR_DATA_FILE_RAW && !h.hasDataFile) {
    throw corrupt('autoclear_features', 88, 'has data_file_raw (bit 1) set but the image has no external data file');
  }

  // Backing file name: a name of 0 bytes means no backing file, as in QEMU.
  const backingSize = v.readUInt32BE(16);
  if (backingOffset !== 0) {
    if (backingSize > L.MAX_BACKING_NAME) throw corrupt('backing_file_size', 16, `${backingSize} is longer than ${L.MAX_BACKING_NAME} bytes`);
    if (backingOffset + backingSize > clusterSize) throw corrupt('backing_file_offset', 8, `${backingOffset} (+${backingSize} bytes) is outside the header cluster`);
    if (backingSize > 0) h.backingFile = cString(v, backingOffset, backingSize);
  }

  // Tables: aligned (even when empty, as QEMU checks), bounded, inside the file.
  const align = (field: string, at2: number, off: number) => {
    if (off % clusterSize !== 0) throw corrupt(field, at2, `${off} is not aligned to the cluster size ${clusterSize}`);
  };
  if (h.refcountTableClusters === 0) throw corrupt('refcount_table_clusters', 56, 'is 0: the image has no refcount table');
  align('refcount_table_offset', 48, h.refcountTableOffset);
  if (h.refcountTableClusters * clusterSize > L.MAX_REFTABLE_BYTES) {
    throw corrupt('refcount_table_clusters', 56, `${h.refcountTableClusters} clusters exceed the limit of ${L.MAX_REFTABLE_BYTES} bytes`);
  }
  if (h.nbSnapshots > L.MAX_SNAPSHOTS) throw corrupt('nb_snapshots', 60, `${h.nbSnapshots} is above ${L.MAX_SNAPSHOTS}`);
  align('snapshots_offset', 64, h.snapshotsOffset);
  if (h.nbSnapshots > 0 && h.snapshotsOffset >= fileSize) throw corrupt('snapshots_offset', 64, `${h.snapshotsOffset} is beyond the end of the file`);
  const l2Entries = clusterSize / (h.extendedL2 ? 16 : 8);
  // QEMU sizes the L1 table from the header's size before rounding it to sectors.
  const needL1 = Math.ceil(headerSize / (clusterSize * l2Entries));
  if (h.l1Size * 8 > L.MAX_L1_BYTES) throw corrupt('l1_size', 36, `${h.l1Size} entries exceed the limit of ${L.MAX_L1_BYTES} bytes`);
  align('l1_table_offset', 40, h.l1TableOffset);
  if (h.l1Size < needL1) throw corrupt('l1_size', 36, `${h.l1Size} is too small for the virtual size ${headerSize} (needs ${needL1})`);
  if (h.l1Size > 0 && (h.l1TableOffset === 0 || h.l1TableOffset + h.l1Size * 8 > fileSize)) {
    throw corrupt('l1_table_offset', 40, `${h.l1TableOffset} (+${h.l1Size * 8} bytes) is outside the file (${fileSize} bytes)`);
  }
  return h;
}

/** A NUL-terminated string of at most `len` bytes (C semantics, as QEMU reads names: it ends at the first NUL). */
export function cString(v: Buffer, at: number, len: number): string {
  const end = v.indexOf(0, at);
  return v.toString('utf8', at, end === -1 || end > at + len ? at + len : end);
}

/**
 * Header extensions from the end of the header to `end` (the backing file name, or the end of
 * the cluster), with QEMU's qcow2_read_extensions rules.
 */
function parseExtensions(v: Buffer, h: Qcow2Header, end: number): void {
  let at = h.headerLength;
  while (at < end) {
    if (at + 8 > end) throw corrupt('header extension', at, `header runs past the end of the extension area (byte ${end})`);
    const type = v.readUInt32BE(at);
    const len = v.readUInt32BE(at + 4);
    const data = at + 8;
    // QEMU checks the length before the type: even an end marker must fit.
    if (len > end - data) throw corrupt('header extension', at, `of ${len} bytes runs past the end of the extension area (byte ${end})`);
    if (type === L.EXT_END) return;
    if (type === L.EXT_BACKING_FORMAT) {
      if (len > L.MAX_BACKING_FORMAT) throw corrupt('backing format extension', at, `of ${len} bytes is longer than ${L.MAX_BACKING_FORMAT}`);
      h.backingFormat = cString(v, data, len);
    } else if (type === L.EXT_DATA_FILE) h.dataFile = cString(v, data, len);
    else if (type === L.EXT_FEATURE_TABLE) {
      for (let e = data; e + 48 <= data + len; e += 48) {
        const kind = ['incompatible', 'compatible', 'autoclear'][v[e]] ?? `type${v[e]}`;
        h.featureNames.set(`${kind}:${v[e + 1]}`, v.toString('utf8', e + 2, e + 48).replace(/\0+$/, ''));
      }
    } else if (type === L.EXT_CRYPTO) {
      if (h.cryptMethod !== L.CRYPT_LUKS) throw corrupt('crypto header extension', at, `is only expected with LUKS encryption (crypt_method ${h.cryptMethod})`);
    } else if (type === L.EXT_BITMAPS) parseBitmapsExtension(v, h, at, len);
    // Unknown extensions are skipped.
    at = data + Math.ceil(len / 8) * 8;
  }
}

/**
 * The bitmaps extension. Its length is checked always; the rest only when the bitmaps autoclear
 * bit vouches for it: without the bit, a program unaware of bitmaps wrote the image and QEMU
 * ignores the bitmaps (with a warning) instead of refusing.
 */
function parseBitmapsExtension(v: Buffer, h: Qcow2Header, at: number, len: number): void {
  if (len !== L.BITMAPS_EXT_BYTES) throw corrupt('bitmaps extension', at, `length ${len} is not ${L.BITMAPS_EXT_BYTES}`);
  if (!(h.autoclear & L.AUTOCLEAR_BITMAPS)) return;
  const data = at + 8;
  const count = v.readUInt32BE(data);
  if (v.readUInt32BE(data + 4) !== 0) throw corrupt('bitmaps extension reserved field', data + 4, 'is not zero');
  if (count > L.MAX_BITMAPS) {
    throw new BlockError('ENOTSUP', `qcow2 header: nb_bitmaps ${count} is above the limit of ${L.MAX_BITMAPS} (at byte ${data})`, { field: 'nb_bitmaps', offset: data });
  }
  if (count === 0) throw corrupt('nb_bitmaps', data, 'is 0 in a bitmaps extension');
  const directorySize = u64(v, data + 8, 'bitmap_directory_size');
  const directoryOffset = u64(v, data + 16, 'bitmap_directory_offset');
  if (directoryOffset % h.clusterSize !== 0) {
    throw corrupt('bitmap_directory_offset', data + 16, `${directoryOffset} is not aligned to the cluster size ${h.clusterSize}`);
  }
  if (directorySize > L.MAX_BITMAP_DIRECTORY_BYTES) {
    throw new BlockError('ENOTSUP', `qcow2 header: bitmap_directory_size ${directorySize} is above the limit of ${L.MAX_BITMAP_DIRECTORY_BYTES} (at byte ${data + 8})`, {
      field: 'bitmap_directory_size',
      offset: data + 8,
    });
  }
  if (directorySize === 0) throw corrupt('bitmap_directory_size', data + 8, 'is 0');
  h.bitmaps = { count, directoryOffset, directorySize };
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
