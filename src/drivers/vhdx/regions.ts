import { BlockError } from '../../errors.js';
import { checksumWithField } from './crc32c.js';
import { guidBytes, guidEquals } from './guid.js';
import { safeNumber } from './header.js';
import * as L from './limits.js';

/** A byte range of the file that one structure owns. */
export interface FileRegion {
  name: string;
  start: number;
  end: number;
}

/** The two regions every VHDX has. */
export interface RegionTable {
  bat: FileRegion;
  metadata: FileRegion;
}

const BAT = guidBytes(L.BAT_GUID);
const METADATA = guidBytes(L.METADATA_GUID);

/** Refuses `r` if it overlaps one of `taken` (QEMU vhdx_region_check), else adds it. */
export function claimRegion(taken: FileRegion[], r: FileRegion, nodeName: string, field: string): void {
  for (const t of taken) {
    if (r.start < t.end && t.start < r.end) {
      throw new BlockError('ECORRUPT', `vhdx: ${r.name} (${r.start}..${r.end}) overlaps the ${t.name} (${t.start}..${t.end})`, { node: nodeName, field, offset: r.start });
    }
  }
  taken.push(r);
}

/**
 * Parses the 64 KiB region table block: checksum, signature, entry count, the BAT and metadata
 * regions (each once, 1 MiB aligned, inside the file, overlapping nothing in `taken`), and refuses
 * unknown regions marked required (QEMU vhdx_open_region_tables).
 */
export function parseRegionTable(block: Uint8Array, fileLength: number, taken: FileRegion[], nodeName: string): RegionTable {
  const v = new DataView(block.buffer, block.byteOffset, block.byteLength);
  const base = L.REGION_TABLE_OFFSET;
  const bad = (field: string, why: string, offset: number) => new BlockError('ECORRUPT', `vhdx: region table ${field}: ${why}`, { node: nodeName, field, offset });
  if (block.length < L.HEADER_BLOCK_BYTES || v.getUint32(0, true) !== L.REGION_SIGNATURE) throw bad('signature', 'not "regi"', base);
  if (checksumWithField(block.subarray(0, L.HEADER_BLOCK_BYTES), 4) !== v.getUint32(4, true)) throw bad('checksum', 'CRC-32C mismatch', base + 4);
  const count = v.getUint32(8, true);
  if (count > L.MAX_REGION_ENTRIES) throw bad('entry_count', `${count} entries, at most ${L.MAX_REGION_ENTRIES}`, base + 8);
  let bat: FileRegion | undefined;
  let metadata: FileRegion | undefined;
  for (let i = 0; i < count; i++) {
    const at = 16 + i * L.REGION_ENTRY_BYTES;
    const start = safeNumber(v.getBigUint64(at + 16, true));
    const length = v.getUint32(at + 24, true);
    const required = (v.getUint32(at + 28, true) & L.REGION_REQUIRED) !== 0;
    const isBat = guidEquals(block, at, BAT);
    const isMeta = guidEquals(block, at, METADATA);
    if (!isBat && !isMeta) {
      if (required) throw new BlockError('ENOTSUP', `vhdx: region table entry ${i} is an unknown region marked required`, { node: nodeName, field: 'region', offset: base + at });
      continue;
    }
    const name = isBat ? 'BAT region' : 'metadata region';
    if (start % L.REGION_ALIGN !== 0 || start < L.HEADER_SECTION_BYTES) throw bad('file_offset', `the ${name} starts at ${start}, not a multiple of 1 MiB past the header section`, base + at + 16);
    if (length % L.REGION_ALIGN !== 0) throw bad('length', `the ${name} is ${length} bytes, not a multiple of 1 MiB`, base + at + 24);
    if (start + length > fileLength) throw bad('length', `the ${name} (${length} bytes at ${start}) ends past the end of the file (${fileLength} bytes)`, base + at + 24);
    const region = { name, start, end: start + length };
    if ((isBat && bat) || (isMeta && metadata)) throw bad('guid', `the ${name} appears twice`, base + at);
    claimRegion(taken, region, nodeName, 'file_offset');
    if (isBat) bat = region;
    else metadata = region;
  }
  if (!bat) throw bad('entries', 'no BAT region', base + 16);
  if (!metadata) throw bad('entries', 'no metadata region', base + 16);
  return { bat, metadata };
}
