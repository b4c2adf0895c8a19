import { BlockError } from '../../errors.js';
import * as L from './limits.js';

/** The fields of a hosted sparse extent header ("KDMV"), sizes and offsets in sectors. */
export interface SparseHeader {
  version: number;
  flags: number;
  /** Virtual size of the extent in sectors. */
  capacity: number;
  /** Grain (cluster) size in sectors. */
  grainSectors: number;
  descriptorOffset: number;
  descriptorSize: number;
  gtesPerGt: number;
  rgdOffset: number;
  /** Grain directory sector, or undefined when the header says it is in the footer (GD_AT_END). */
  gdOffset: number | undefined;
  /** Sectors of metadata before the first grain (QEMU grain_offset). */
  overhead: number;
  uncleanShutdown: boolean;
  compressAlgorithm: number;
}

/** Byte offset of each header field, for error messages (after the 4-byte magic). */
export const FIELD_OFFSETS = {
  magic: 0,
  version: 4,
  flags: 8,
  capacity: 12,
  grainSize: 20,
  descriptorOffset: 28,
  descriptorSize: 36,
  numGTEsPerGT: 44,
  rgdOffset: 48,
  gdOffset: 56,
  overHead: 64,
  uncleanShutdown: 72,
  compressAlgorithm: 77,
} as const;

type Field = keyof typeof FIELD_OFFSETS;

/** An ECORRUPT naming the header field and where it sits (`base`: the header's own offset in the file). */
export function headerError(field: Field, message: string, base = 0, code: 'ECORRUPT' | 'ENOTSUP' = 'ECORRUPT'): BlockError {
  const offset = base + FIELD_OFFSETS[field];
  return new BlockError(code, `vmdk: header field '${field}' (byte ${offset}): ${message}`, { field, offset });
}

/** True when `head` starts with the sparse extent magic. */
export function hasSparseMagic(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x4b && head[1] === 0x44 && head[2] === 0x4d && head[3] === 0x56;
}

/** True when `head` starts with the magic of VMDK3's sparse extents ("COWD", ESX's vmfsSparse), which we do not read. */
export function hasCowdMagic(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x43 && head[1] === 0x4f && head[2] === 0x57 && head[3] === 0x44;
}

/** A 64-bit sector count or offset, refused above `max` before it becomes a number. */
function sectors(v: DataView, field: Field, max: number, base: number): number {
  const x = v.getBigUint64(FIELD_OFFSETS[field], true);
  if (x > BigInt(max)) throw headerError(field, `${x} is larger than ${max}`, base);
  return Number(x);
}

/** Parses one header sector (`base`: where it was read, the start of the file or the footer). */
export function parseSparseHeader(buf: Uint8Array, base = 0): SparseHeader {
  if (buf.length < L.HEADER_BYTES) throw headerError('magic', `the header needs ${L.HEADER_BYTES} bytes, the file has ${buf.length}`, base);
  if (hasCowdMagic(buf)) throw headerError('magic', 'VMDK3 (COWD, vmfsSparse) sparse extents are not supported', base, 'ENOTSUP');
  if (!hasSparseMagic(buf)) throw headerError('magic', 'not a VMDK sparse extent (no KDMV magic)', base);
  const v = new DataView(buf.buffer, buf.byteOffset, L.HEADER_BYTES);
  const version = v.getUint32(FIELD_OFFSETS.version, true);
  if (version === 0 || version > L.MAX_VERSION) throw headerError('version', `version ${version} is not supported (1 to ${L.MAX_VERSION})`, base, 'ENOTSUP');
  const gtesPerGt = v.getUint32(FIELD_OFFSETS.numGTEsPerGT, true);
  if (gtesPerGt === 0 || gtesPerGt > L.MAX_GTES_PER_GT) throw headerError('numGTEsPerGT', `${gtesPerGt} grain table entries (1 to ${L.MAX_GTES_PER_GT})`, base);
  const rawGd = v.getBigUint64(FIELD_OFFSETS.gdOffset, true);
  const anySector = L.MAX_CAPACITY_SECTORS;
  return {
    version,
    flags: v.getUint32(FIELD_OFFSETS.flags, true),
    capacity: sectors(v, 'capacity', L.MAX_CAPACITY_SECTORS, base),
    grainSectors: sectors(v, 'grainSize', L.MAX_GRAIN_SECTORS, base),
    descriptorOffset: sectors(v, 'descriptorOffset', anySector, base),
    descriptorSize: sectors(v, 'descriptorSize', anySector, base),
    gtesPerGt,
    rgdOffset: sectors(v, 'rgdOffset', anySector, base),
    gdOffset: rawGd === L.GD_AT_END ? undefined : sectors(v, 'gdOffset', anySector, base),
    overhead: sectors(v, 'overHead', anySector, base),
    uncleanShutdown: buf[FIELD_OFFSETS.uncleanShutdown] !== 0,
    compressAlgorithm: v.getUint16(FIELD_OFFSETS.compressAlgorithm, true),
  };
}

/**
 * The header in the footer of a stream-optimized file (GD_AT_END): the footer marker, the
 * footer (a header whose gdOffset is real) and the end-of-stream marker, the last three
 * sectors of `area` read at byte `base` of the file.
 */
export function parseFooter(area: Uint8Array, base: number): SparseHeader {
  if (area.length < L.FOOTER_AREA_BYTES) {
    throw new BlockError('ECORRUPT', `vmdk: the footer needs ${L.FOOTER_AREA_BYTES} bytes at the end of the file, the file is shorter`, { field: 'footer', offset: base });
  }
  const v = new DataView(area.buffer, area.byteOffset, L.FOOTER_AREA_BYTES);
  const bad = (what: string, at: number) => new BlockError('ECORRUPT', `vmdk: invalid footer: ${what} (byte ${base + at})`, { field: 'footer', offset: base + at });
  if (v.getUint32(8, true) !== 0 || v.getUint32(12, true) !== L.MARKER_FOOTER) throw bad('no footer marker', 0);
  const eos = 2 * L.SECTOR;
  if (v.getBigUint64(eos, true) !== 0n || v.getUint32(eos + 8, true) !== 0 || v.getUint32(eos + 12, true) !== L.MARKER_EOS) throw bad('no end-of-stream marker', eos);
  const h = parseSparseHeader(area.subarray(L.SECTOR, 2 * L.SECTOR), base + L.SECTOR);
  if (h.gdOffset === undefined) throw headerError('gdOffset', 'the footer puts the grain directory at the end too', base + L.SECTOR);
  return h;
}

/** Where a sparse extent's tables are, in bytes, checked against the file: what reads and writes need. */
export interface SparseLayout {
  capacityBytes: number;
  grainBytes: number;
  gtEntries: number;
  gtBytes: number;
  gdEntries: number;
  gdOffset: number;
  /** The redundant grain directory, if the header has one. */
  rgdOffset: number | undefined;
  /** Grains are deflated, each behind a grain marker (streamOptimized). */
  compressed: boolean;
  markers: boolean;
  zeroGrain: boolean;
}

/** Checks the header's geometry against the limits and `fileSize`, and returns the layout in bytes. */
export function sparseLayout(h: SparseHeader, fileSize: number, base = 0): SparseLayout {
  if (h.grainSectors === 0) throw headerError('grainSize', 'the grain size is 0', base);
  const gtCoverage = h.grainSectors * h.gtesPerGt;
  const gdEntries = Math.ceil(h.capacity / gtCoverage);
  if (gdEntries > L.MAX_GD_ENTRIES) throw headerError('capacity', `${h.capacity} sectors need ${gdEntries} grain directory entries (at most ${L.MAX_GD_ENTRIES})`, base);
  const gdBytes = gdEntries * 4;
  const gdOffset = h.gdOffset! * L.SECTOR;
  const within = (field: Field, at: number, what: string) => {
    if (at < L.SECTOR || at + gdBytes > fileSize) {
      throw headerError(field, `the ${what} (${gdBytes} bytes at ${at}) is not inside the file (${fileSize} bytes, after the header)`, base);
    }
  };
  within('gdOffset', gdOffset, 'grain directory');
  const hasRgd = (h.flags & L.FLAG_RGD) !== 0;
  const rgdOffset = hasRgd ? h.rgdOffset * L.SECTOR : undefined;
  if (rgdOffset !== undefined) {
    within('rgdOffset', rgdOffset, 'redundant grain directory');
    if (rgdOffset < gdOffset + gdBytes && gdOffset < rgdOffset + gdBytes) throw headerError('rgdOffset', 'the redundant grain directory overlaps the grain directory', base);
  }
  const compressed = h.compressAlgorithm === L.COMPRESSION_DEFLATE;
  if (h.compressAlgorithm !== 0 && !compressed) throw headerError('compressAlgorithm', `compression algorithm ${h.compressAlgorithm} is not supported (0 or 1, deflate)`, base, 'ENOTSUP');
  return {
    capacityBytes: h.capacity * L.SECTOR,
    grainBytes: h.grainSectors * L.SECTOR,
    gtEntries: h.gtesPerGt,
    gtBytes: h.gtesPerGt * 4,
    gdEntries,
    gdOffset,
    rgdOffset,
    compressed,
    markers: (h.flags & L.FLAG_MARKER) !== 0,
    zeroGrain: (h.flags & L.FLAG_ZERO_GRAIN) !== 0,
  };
}
