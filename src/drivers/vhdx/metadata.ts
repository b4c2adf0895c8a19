import { BlockError } from '../../errors.js';
import { guidBytes, guidEquals, guidText } from './guid.js';
import * as L from './limits.js';
import type { FileRegion } from './regions.js';

/** Where one metadata item lies, relative to the metadata region. */
export interface MetadataItem {
  offset: number;
  length: number;
}

/** What the metadata region says about the virtual disk (spec 3.5; QEMU vhdx_parse_metadata). */
export interface VhdxMetadata {
  blockSize: number;
  /** Blocks stay allocated (a fixed image). */
  leaveBlocksAllocated: boolean;
  /** A differencing image: reads fall through to a parent. */
  hasParent: boolean;
  virtualSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** The SCSI page 83 identifier, as a GUID. */
  page83: string;
  /** The parent locator's type and key/value pairs (differencing images). */
  parentLocator?: { type: string; entries: Record<string, string> };
}

const KNOWN = {
  fileParameters: guidBytes(L.FILE_PARAMETERS_GUID),
  virtualDiskSize: guidBytes(L.VIRTUAL_DISK_SIZE_GUID),
  page83: guidBytes(L.PAGE83_GUID),
  logicalSectorSize: guidBytes(L.LOGICAL_SECTOR_SIZE_GUID),
  physicalSectorSize: guidBytes(L.PHYSICAL_SECTOR_SIZE_GUID),
  parentLocator: guidBytes(L.PARENT_LOCATOR_GUID),
};
type ItemName = keyof typeof KNOWN;
/** The least length of each item (what we read of it). */
const ITEM_BYTES: Record<ItemName, number> = { fileParameters: 8, virtualDiskSize: 8, page83: 16, logicalSectorSize: 4, physicalSectorSize: 4, parentLocator: 20 };

/**
 * The table at the start of the metadata region: signature, entry count, and where each known item
 * lies (each once, inside the region, at most 1 MiB); an unknown item marked required is refused.
 */
export function parseMetadataTable(table: Uint8Array, region: FileRegion, nodeName: string): Partial<Record<ItemName, MetadataItem>> {
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const bad = (field: string, why: string, offset: number) => new BlockError('ECORRUPT', `vhdx: metadata ${field}: ${why}`, { node: nodeName, field, offset: region.start + offset });
  const sig = new TextDecoder().decode(table.subarray(0, 8));
  if (sig !== L.METADATA_SIGNATURE) throw bad('signature', 'not "metadata"', 0);
  const count = v.getUint16(10, true);
  if (count > L.MAX_METADATA_ENTRIES) throw bad('entry_count', `${count} entries, at most ${L.MAX_METADATA_ENTRIES}`, 10);
  const regionLength = region.end - region.start;
  const items: Partial<Record<ItemName, MetadataItem>> = {};
  for (let i = 0; i < count; i++) {
    const at = 32 + i * L.METADATA_ENTRY_BYTES;
    const name = (Object.keys(KNOWN) as ItemName[]).find((k) => guidEquals(table, at, KNOWN[k]));
    const flags = v.getUint32(at + 24, true);
    if (!name) {
      if (flags & L.META_IS_REQUIRED) throw new BlockError('ENOTSUP', `vhdx: metadata entry ${i} (${guidText(table, at)}) is an unknown item marked required`, { node: nodeName, field: 'metadata', offset: region.start + at });
      continue;
    }
    if (items[name]) throw bad('item_id', `the ${name} item appears twice`, at);
    const offset = v.getUint32(at + 16, true);
    const length = v.getUint32(at + 20, true);
    if (length < ITEM_BYTES[name] || length > L.MAX_METADATA_ITEM_BYTES) throw bad('length', `the ${name} item is ${length} bytes (${ITEM_BYTES[name]} to ${L.MAX_METADATA_ITEM_BYTES})`, at + 20);
    if (offset < L.METADATA_TABLE_BYTES || offset + length > regionLength) throw bad('offset', `the ${name} item (${length} bytes at ${offset}) lies outside the metadata region's items (${L.METADATA_TABLE_BYTES}..${regionLength})`, at + 16);
    items[name] = { offset, length };
  }
  return items;
}

const REQUIRED: ItemName[] = ['fileParameters', 'virtualDiskSize', 'page83', 'logicalSectorSize', 'physicalSectorSize'];

/** Reads and validates the items the table points at; `read(offset, length)` reads the metadata region. */
export async function readMetadata(table: Uint8Array, region: FileRegion, read: (offset: number, length: number) => Promise<Uint8Array>, nodeName: string): Promise<VhdxMetadata> {
  const items = parseMetadataTable(table, region, nodeName);
  for (const name of REQUIRED) {
    if (!items[name]) throw new BlockError('ECORRUPT', `vhdx: metadata: the required ${name} item is missing`, { node: nodeName, field: name, offset: region.start });
  }
  const item = async (name: ItemName, length = ITEM_BYTES[name]) => {
    const b = await read(region.start + items[name]!.offset, length);
    return { b, v: new DataView(b.buffer, b.byteOffset, b.byteLength), at: region.start + items[name]!.offset };
  };
  const bad = (field: string, why: string, offset: number) => new BlockError('ECORRUPT', `vhdx: metadata ${field}: ${why}`, { node: nodeName, field, offset });

  const fp = await item('fileParameters');
  const blockSize = fp.v.getUint32(0, true);
  const bits = fp.v.getUint32(4, true);
  if (blockSize < L.MIN_BLOCK_SIZE || blockSize > L.MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw bad('block_size', `${blockSize} is not a power of two from ${L.MIN_BLOCK_SIZE} to ${L.MAX_BLOCK_SIZE}`, fp.at);
  }
  const lss = (await item('logicalSectorSize')).v.getUint32(0, true);
  if (!L.SECTOR_SIZES.includes(lss)) throw bad('logical_sector_size', `${lss} is neither 512 nor 4096`, region.start + items.logicalSectorSize!.offset);
  const pss = (await item('physicalSectorSize')).v.getUint32(0, true);
  if (!L.SECTOR_SIZES.includes(pss)) throw bad('physical_sector_size', `${pss} is neither 512 nor 4096`, region.start + items.physicalSectorSize!.offset);
  const vds = await item('virtualDiskSize');
  const size = vds.v.getBigUint64(0, true);
  if (size > BigInt(L.MAX_VIRTUAL_SIZE)) throw bad('virtual_disk_size', `${size} is larger than 64 TiB`, vds.at);
  const virtualSize = Number(size);
  if (virtualSize % lss !== 0) throw bad('virtual_disk_size', `${virtualSize} is not a multiple of the logical sector size ${lss}`, vds.at);
  const page83 = guidText((await item('page83')).b);
  const meta: VhdxMetadata = {
    blockSize,
    leaveBlocksAllocated: (bits & L.PARAMS_LEAVE_BLOCKS_ALLOCATED) !== 0,
    hasParent: (bits & L.PARAMS_HAS_PARENT) !== 0,
    virtualSize,
    logicalSectorSize: lss,
    physicalSectorSize: pss,
    page83,
  };
  if (meta.hasParent) {
    if (!items.parentLocator) throw bad('has_parent', 'the file parameters name a parent but there is no parent locator', fp.at);
    const pl = await item('parentLocator', items.parentLocator.length);
    meta.parentLocator = parseParentLocator(pl.b, pl.at, nodeName);
  }
  return meta;
}

/** The parent locator item: a type GUID and UTF-16LE key/value pairs, each inside the item. */
export function parseParentLocator(b: Uint8Array, at: number, nodeName: string): { type: string; entries: Record<string, string> } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const count = v.getUint16(18, true);
  const bad = (why: string, offset: number) => new BlockError('ECORRUPT', `vhdx: parent locator: ${why}`, { node: nodeName, field: 'parent_locator', offset: at + offset });
  if (count > L.MAX_LOCATOR_ENTRIES || 20 + count * 12 > b.length) throw bad(`${count} entries do not fit in its ${b.length} bytes`, 18);
  const utf16 = new TextDecoder('utf-16le');
  const entries: Record<string, string> = {};
  const text = (offset: number, length: number, what: string, entryAt: number) => {
    if (length === 0 || length % 2 !== 0 || offset + length > b.length) throw bad(`entry ${what} (${length} bytes at ${offset}) is empty, odd or outside the item`, entryAt);
    return utf16.decode(b.subarray(offset, offset + length));
  };
  for (let i = 0; i < count; i++) {
    const e = 20 + i * 12;
    const key = text(v.getUint32(e, true), v.getUint16(e + 8, true), 'key', e);
    entries[key] = text(v.getUint32(e + 4, true), v.getUint16(e + 10, true), 'value', e);
  }
  return { type: guidText(b, 0), entries };
}
