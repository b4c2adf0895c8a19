import { BlockError, type BlockErrorCode } from '../../errors.js';
import * as L from './limits.js';

/** A VDI header with every field we use, checked (QEMU VdiHeader). */
export interface VdiHeader {
  headerSize: number;
  /** {@link L.TYPE_DYNAMIC} or {@link L.TYPE_STATIC}. */
  imageType: number;
  imageFlags: number;
  description: string;
  offsetBmap: number;
  offsetData: number;
  /** The size stored in the header (VBoxManage can store odd sizes; see {@link virtualSize}). */
  diskSize: number;
  blockSize: number;
  blocksInImage: number;
  blocksAllocated: number;
  /** UUIDs in the 16 bytes' own (VirtualBox, little-endian) order. */
  uuidImage: Uint8Array;
  uuidLastSnap: Uint8Array;
}

const fail = (code: BlockErrorCode, field: string, offset: number, message: string) =>
  new BlockError(code, `vdi header: ${field} ${message} (at byte ${offset})`, { field, offset });

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const isNull = (b: Uint8Array) => b.every((x) => x === 0);

/** True when `head` carries VDI's signature at byte 0x40 (QEMU vdi_probe: a whole header is needed). */
export function hasVdiSignature(head: Uint8Array): boolean {
  return head.length >= L.HEADER_BYTES && view(head).getUint32(L.OFF.signature, true) === L.VDI_SIGNATURE;
}

/** Bytes of the block map on disk: one entry per block, rounded up to whole sectors (as QEMU reads and writes it). */
export function blockMapBytes(blocks: number): number {
  return Math.ceil((blocks * L.ENTRY_BYTES) / L.SECTOR_SIZE) * L.SECTOR_SIZE;
}

/** The guest size: the stored size rounded up to whole sectors, as QEMU does for VBoxManage's odd sizes. */
export function virtualSize(h: VdiHeader): number {
  return Math.ceil(h.diskSize / L.SECTOR_SIZE) * L.SECTOR_SIZE;
}

/**
 * Parses and checks the first 512 bytes of a VDI image against QEMU's rules and our named limits,
 * and the layout against the file's length: the block map lies after the header, inside the
 * file, and before the data. A violation is ECORRUPT (impossible values) or ENOTSUP (valid VDI
 * that QEMU does not read either), naming the field and its byte offset.
 */
export function parseVdiHeader(head: Uint8Array, fileLength: number): VdiHeader {
  if (head.length < L.HEADER_BYTES) {
    throw new BlockError('ECORRUPT', `vdi header: the file has ${head.length} bytes, a header needs ${L.HEADER_BYTES}`, { field: 'header', offset: 0 });
  }
  const v = view(head);
  const u32 = (at: number) => v.getUint32(at, true);
  const signature = u32(L.OFF.signature);
  if (signature !== L.VDI_SIGNATURE) throw fail('ECORRUPT', 'signature', L.OFF.signature, `0x${signature.toString(16)} is not VDI's (0x${L.VDI_SIGNATURE.toString(16)})`);
  const version = u32(L.OFF.version);
  if (version !== L.VDI_VERSION_1_1) throw fail('ENOTSUP', 'version', L.OFF.version, `${version >>> 16}.${version & 0xffff} is not supported (only 1.1)`);
  const headerSize = u32(L.OFF.headerSize);
  const imageType = u32(L.OFF.imageType);
  if (imageType !== L.TYPE_DYNAMIC && imageType !== L.TYPE_STATIC) {
    throw fail('ENOTSUP', 'image_type', L.OFF.imageType, `${imageType} is not supported (1 dynamic, 2 static; undo and diff images are not)`);
  }
  const diskSize = Number(v.getBigUint64(L.OFF.diskSize, true));
  if (diskSize > L.MAX_DISK_SIZE) throw fail('ENOTSUP', 'disk_size', L.OFF.diskSize, `${diskSize} is larger than ${L.MAX_DISK_SIZE} bytes`);
  const sectorSize = u32(L.OFF.sectorSize);
  if (sectorSize !== L.SECTOR_SIZE) throw fail('ENOTSUP', 'sector_size', L.OFF.sectorSize, `${sectorSize} is not ${L.SECTOR_SIZE}`);
  const blockSize = u32(L.OFF.blockSize);
  if (blockSize !== L.BLOCK_SIZE) throw fail('ENOTSUP', 'block_size', L.OFF.blockSize, `${blockSize} is not ${L.BLOCK_SIZE}`);
  const blocksInImage = u32(L.OFF.blocksInImage);
  if (blocksInImage > L.MAX_BLOCKS) throw fail('ENOTSUP', 'blocks_in_image', L.OFF.blocksInImage, `${blocksInImage} is more than ${L.MAX_BLOCKS}`);
  if (diskSize > blocksInImage * blockSize) {
    throw fail('ECORRUPT', 'disk_size', L.OFF.diskSize, `${diskSize} does not fit in ${blocksInImage} blocks of ${blockSize} bytes`);
  }
  const blocksAllocated = u32(L.OFF.blocksAllocated);
  if (blocksAllocated > blocksInImage) throw fail('ECORRUPT', 'blocks_allocated', L.OFF.blocksAllocated, `${blocksAllocated} is more than blocks_in_image ${blocksInImage}`);
  if (!isNull(head.subarray(L.OFF.uuidLink, L.OFF.uuidLink + 16))) throw fail('ENOTSUP', 'uuid_link', L.OFF.uuidLink, 'is not null (linked images are not supported)');
  if (!isNull(head.subarray(L.OFF.uuidParent, L.OFF.uuidParent + 16))) throw fail('ENOTSUP', 'uuid_parent', L.OFF.uuidParent, 'is not null (differencing images are not supported)');

  const offsetBmap = u32(L.OFF.offsetBmap);
  const offsetData = u32(L.OFF.offsetData);
  if (offsetBmap % L.SECTOR_SIZE !== 0) throw fail('ENOTSUP', 'offset_bmap', L.OFF.offsetBmap, `0x${offsetBmap.toString(16)} is not sector aligned`);
  if (offsetData % L.SECTOR_SIZE !== 0) throw fail('ENOTSUP', 'offset_data', L.OFF.offsetData, `0x${offsetData.toString(16)} is not sector aligned`);
  if (headerSize < L.MIN_HEADER_SIZE || L.PRE_HEADER_BYTES + headerSize > Math.max(offsetBmap, L.HEADER_BYTES)) {
    throw fail('ECORRUPT', 'header_size', L.OFF.headerSize, `${headerSize} is not between ${L.MIN_HEADER_SIZE} and the block map at ${offsetBmap}`);
  }
  if (offsetBmap < L.HEADER_BYTES) throw fail('ECORRUPT', 'offset_bmap', L.OFF.offsetBmap, `${offsetBmap} overlaps the header (${L.HEADER_BYTES} bytes)`);
  // The map is read in whole sectors (QEMU does too): those must lie in the file, before the data.
  const mapEnd = offsetBmap + blockMapBytes(blocksInImage);
  if (offsetData < offsetBmap + blocksInImage * L.ENTRY_BYTES) {
    throw fail('ECORRUPT', 'offset_data', L.OFF.offsetData, `${offsetData} overlaps the block map (${offsetBmap}..${mapEnd})`);
  }
  if (mapEnd > fileLength) throw fail('ECORRUPT', 'offset_bmap', L.OFF.offsetBmap, `block map ${offsetBmap}..${mapEnd} lies past the end of the file (${fileLength} bytes)`);

  return {
    headerSize,
    imageType,
    imageFlags: u32(L.OFF.imageFlags),
    description: cString(head.subarray(L.OFF.description, L.OFF.description + L.DESCRIPTION_BYTES)),
    offsetBmap,
    offsetData,
    diskSize,
    blockSize,
    blocksInImage,
    blocksAllocated,
    uuidImage: head.slice(L.OFF.uuidImage, L.OFF.uuidImage + 16),
    uuidLastSnap: head.slice(L.OFF.uuidLastSnap, L.OFF.uuidLastSnap + 16),
  };
}

/** Text up to its first NUL (Latin-1: the field is bytes). */
function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return String.fromCharCode(...b.subarray(0, end < 0 ? b.length : end));
}

/** The 512 header bytes of `h` as QEMU lays them out (text, signature, version, fields, zero padding). */
export function encodeVdiHeader(h: VdiHeader): Uint8Array {
  const b = new Uint8Array(L.HEADER_BYTES);
  const v = view(b);
  for (let i = 0; i < L.HEADER_TEXT.length; i++) b[i] = L.HEADER_TEXT.charCodeAt(i);
  const u32 = (at: number, x: number) => v.setUint32(at, x, true);
  u32(L.OFF.signature, L.VDI_SIGNATURE);
  u32(L.OFF.version, L.VDI_VERSION_1_1);
  u32(L.OFF.headerSize, h.headerSize);
  u32(L.OFF.imageType, h.imageType);
  u32(L.OFF.imageFlags, h.imageFlags);
  const desc = h.description.slice(0, L.DESCRIPTION_BYTES - 1);
  for (let i = 0; i < desc.length; i++) b[L.OFF.description + i] = desc.charCodeAt(i) & 0xff;
  u32(L.OFF.offsetBmap, h.offsetBmap);
  u32(L.OFF.offsetData, h.offsetData);
  u32(L.OFF.sectorSize, L.SECTOR_SIZE);
  v.setBigUint64(L.OFF.diskSize, BigInt(h.diskSize), true);
  u32(L.OFF.blockSize, h.blockSize);
  u32(L.OFF.blocksInImage, h.blocksInImage);
  u32(L.OFF.blocksAllocated, h.blocksAllocated);
  b.set(h.uuidImage, L.OFF.uuidImage);
  b.set(h.uuidLastSnap, L.OFF.uuidLastSnap);
  return b;
}

/**
 * A UUID as text: VDI stores the first three groups little endian (IPRT's layout), shown in
 * RFC 4122's order as QEMU converts them.
 */
export function uuidText(u: Uint8Array): string {
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  const hex = order.map((i) => u[i].toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A new random (version 4) UUID in VDI's on-disk byte order. */
export function randomUuid(): Uint8Array {
  const rfc = globalThis.crypto.getRandomValues(new Uint8Array(16));
  rfc[6] = (rfc[6] & 0x0f) | 0x40;
  rfc[8] = (rfc[8] & 0x3f) | 0x80;
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  return Uint8Array.from(order, (i) => rfc[i]);
}
