import { BlockError } from '../../errors.js';
import * as L from './limits.js';

/** Where an image's metadata lies, which no block may overlap. */
export interface MetadataRegions {
  /** The dynamic header's offset. */
  headerOffset: number;
  tableOffset: number;
  blockSize: number;
  bitmapSize: number;
  fileSize: number;
}

/**
 * The BAT from its big-endian bytes, each entry checked (QEMU vpc_open refuses blocks past the end
 * of the file; we also refuse blocks over the footer copy, the headers, the BAT or each other).
 * Returns the entries and the first free offset (QEMU's free_data_block_offset): where the
 * next block goes, the footer after it: past the BAT, the blocks and anything else before the footer.
 */
export function parseBat(bytes: Uint8Array, m: MetadataRegions): { bat: Uint32Array; freeOffset: number } {
  const n = bytes.length >>> 2;
  const bat = new Uint32Array(n);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const span = m.bitmapSize + m.blockSize;
  const tableEnd = m.tableOffset + n * 4;
  let freeOffset = Math.ceil(tableEnd / L.SECTOR_SIZE) * L.SECTOR_SIZE;
  let allocated = 0;
  for (let i = 0; i < n; i++) {
    const e = v.getUint32(i * 4);
    bat[i] = e;
    if (e === L.BAT_UNALLOCATED) continue;
    allocated++;
    const start = e * L.SECTOR_SIZE;
    const where = m.tableOffset + i * 4;
    const overlaps = (from: number, to: number) => start < to && start + span > from;
    if (start + span > m.fileSize) {
      throw new BlockError('ECORRUPT', `vpc: BAT entry ${i} (at offset ${where}) puts block ${i} at ${start}, ending beyond the end of the file (${m.fileSize} bytes): the image is truncated`, {
        field: 'bat',
        offset: where,
      });
    }
    if (overlaps(0, L.FOOTER_SIZE) || overlaps(m.headerOffset, m.headerOffset + L.DYNAMIC_HEADER_SIZE) || overlaps(m.tableOffset, tableEnd)) {
      throw new BlockError('ECORRUPT', `vpc: BAT entry ${i} (at offset ${where}) puts block ${i} at ${start}, over the image's footer, header or BAT`, { field: 'bat', offset: where });
    }
    freeOffset = Math.max(freeOffset, start + span);
  }
  // New blocks go where the footer is, never over anything else in the file (parent locator
  // data may follow the BAT: QEMU's rule, past the BAT and the blocks, would overwrite it).
  freeOffset = Math.max(freeOffset, Math.ceil((m.fileSize - L.FOOTER_SIZE) / L.SECTOR_SIZE) * L.SECTOR_SIZE);
  // Blocks over each other: sorted starts must lie a whole block apart.
  const starts = new Uint32Array(allocated);
  let k = 0;
  for (let i = 0; i < n; i++) if (bat[i] !== L.BAT_UNALLOCATED) starts[k++] = bat[i];
  starts.sort();
  const spanSectors = span / L.SECTOR_SIZE;
  for (let i = 1; i < allocated; i++) {
    if (starts[i] - starts[i - 1] < spanSectors) {
      const index = bat.indexOf(starts[i]);
      throw new BlockError('ECORRUPT', `vpc: BAT entry ${index} (at offset ${m.tableOffset + index * 4}) puts a block at ${starts[i] * L.SECTOR_SIZE}, over the block at ${starts[i - 1] * L.SECTOR_SIZE}`, {
        field: 'bat',
        offset: m.tableOffset + index * 4,
      });
    }
  }
  return { bat, freeOffset };
}

/** Whether sector `s` of a block is present in this image (bitmaps are most significant bit first). */
export const bitSet = (bitmap: Uint8Array, s: number): boolean => (bitmap[s >>> 3] & (0x80 >>> (s & 7))) !== 0;

/** Sectors from `s` on (up to `end`) whose bit equals that of `s`. */
export function runLength(bitmap: Uint8Array, s: number, end: number): number {
  const want = bitSet(bitmap, s);
  let i = s + 1;
  while (i < end) {
    // Whole bytes at once where the run spans them.
    if ((i & 7) === 0 && i + 8 <= end && bitmap[i >>> 3] === (want ? 0xff : 0)) {
      i += 8;
      continue;
    }
    if (bitSet(bitmap, i) !== want) break;
    i++;
  }
  return i - s;
}

/** Sets the bits of sectors [from, to). */
export function setBits(bitmap: Uint8Array, from: number, to: number): void {
  for (let s = from; s < to; s++) bitmap[s >>> 3] |= 0x80 >>> (s & 7);
}

/** True when every sector of [from, to) is present. */
export function allSet(bitmap: Uint8Array, from: number, to: number): boolean {
  return from >= to || (bitSet(bitmap, from) && runLength(bitmap, from, to) >= to - from);
}
