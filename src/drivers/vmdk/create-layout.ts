import * as L from './limits.js';

/** What a new sparse extent looks like (QEMU vmdk_init_extent), in sectors. */
export interface NewSparseLayout {
  capacity: number;
  grainSectors: number;
  gtesPerGt: number;
  gtSectors: number;
  gtCount: number;
  gdSectors: number;
  rgdOffset: number;
  gdOffset: number;
  /** First grain: the end of the metadata, rounded up to a grain. */
  grainOffset: number;
}

/** The layout QEMU gives a new sparse extent of `capacity` sectors: 64 KiB grains, 512 entries per table, every grain table made. */
export function newSparseLayout(capacity: number): NewSparseLayout {
  const grainSectors = 128;
  const gtesPerGt = 512;
  const grains = Math.ceil(capacity / grainSectors);
  const gtSectors = Math.ceil((gtesPerGt * 4) / L.SECTOR);
  const gtCount = Math.ceil(grains / gtesPerGt);
  const gdSectors = Math.ceil((gtCount * 4) / L.SECTOR);
  const rgdOffset = 1 + L.EMBEDDED_DESCRIPTOR_BYTES / L.SECTOR;
  const gdOffset = rgdOffset + gdSectors + gtSectors * gtCount;
  const end = gdOffset + gdSectors + gtSectors * gtCount;
  return { capacity, grainSectors, gtesPerGt, gtSectors, gtCount, gdSectors, rgdOffset, gdOffset, grainOffset: Math.ceil(end / grainSectors) * grainSectors };
}

/** The header sector of a new sparse extent. */
export function newSparseHeader(l: NewSparseLayout, o: { compressed: boolean; zeroedGrain: boolean }): Uint8Array {
  const b = new Uint8Array(L.HEADER_BYTES);
  const v = new DataView(b.buffer);
  b.set([0x4b, 0x44, 0x4d, 0x56]);
  v.setUint32(4, o.compressed ? 3 : o.zeroedGrain ? 2 : 1, true);
  const flags = L.FLAG_RGD | L.FLAG_NL_DETECT | (o.compressed ? L.FLAG_COMPRESS | L.FLAG_MARKER : 0) | (o.zeroedGrain ? L.FLAG_ZERO_GRAIN : 0);
  v.setUint32(8, flags, true);
  v.setBigUint64(12, BigInt(l.capacity), true);
  v.setBigUint64(20, BigInt(l.grainSectors), true);
  v.setBigUint64(28, 1n, true);
  v.setBigUint64(36, BigInt(L.EMBEDDED_DESCRIPTOR_BYTES / L.SECTOR), true);
  v.setUint32(44, l.gtesPerGt, true);
  v.setBigUint64(48, BigInt(l.rgdOffset), true);
  v.setBigUint64(56, BigInt(l.gdOffset), true);
  v.setBigUint64(64, BigInt(l.grainOffset), true);
  // The line-end check bytes ('\n', ' ', '\r', '\n') that tell a text-mode transfer.
  b.set([0x0a, 0x20, 0x0d, 0x0a], 73);
  v.setUint16(77, o.compressed ? L.COMPRESSION_DEFLATE : 0, true);
  return b;
}

/** What a new descriptor says. */
export interface NewDescriptor {
  cid: number;
  parentCid: number;
  createType: string;
  parentFileNameHint: string | undefined;
  /** Extent lines, e.g. `RW 2048 SPARSE "disk.vmdk"`. */
  extents: string[];
  hwVersion: string;
  adapterType: string;
  toolsVersion: string;
  /** Virtual size in bytes (for the geometry). */
  size: number;
}

const hex = (n: number) => (n >>> 0).toString(16);

/** The descriptor text qemu-img writes (the same lines in the same order). */
export function descriptorFor(d: NewDescriptor): string {
  const heads = d.adapterType === 'ide' ? 16 : 255;
  const cylinders = Math.floor(d.size / (63 * heads * L.SECTOR));
  return [
    '# Disk DescriptorFile',
    'version=1',
    `CID=${hex(d.cid)}`,
    `parentCID=${hex(d.parentCid)}`,
    `createType="${d.createType}"`,
    d.parentFileNameHint === undefined ? '' : `parentFileNameHint="${d.parentFileNameHint}"`,
    '# Extent description',
    ...d.extents,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    `ddb.virtualHWVersion = "${d.hwVersion}"`,
    `ddb.geometry.cylinders = "${cylinders}"`,
    `ddb.geometry.heads = "${heads}"`,
    'ddb.geometry.sectors = "63"',
    `ddb.adapterType = "${d.adapterType}"`,
    `ddb.toolsVersion = "${d.toolsVersion}"`,
    '',
  ].join('\n');
}
