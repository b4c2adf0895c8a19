import { BlockError } from '../../errors.js';
import * as L from './limits.js';
import type { FileRegion } from './regions.js';

/** How guest blocks map onto BAT entries: a sector bitmap entry follows every `chunkRatio` payload entries. */
export interface BatGeometry {
  blockSize: number;
  /** Payload blocks per sector bitmap block: 2^23 * logical sector size / block size. */
  chunkRatio: number;
  /** Payload blocks of the virtual disk. */
  payloadBlocks: number;
  /** BAT entries, payload and sector bitmap ones (QEMU vhdx_calc_bat_entries). */
  entries: number;
}

export function batGeometry(virtualSize: number, blockSize: number, logicalSectorSize: number, hasParent: boolean): BatGeometry {
  const chunkRatio = (L.SECTORS_PER_BITMAP * logicalSectorSize) / blockSize;
  const payloadBlocks = Math.ceil(virtualSize / blockSize);
  const bitmapBlocks = Math.ceil(payloadBlocks / chunkRatio);
  // A differencing image has every chunk's bitmap entry; otherwise the entries end with the last payload block.
  const entries = hasParent ? bitmapBlocks * (chunkRatio + 1) : payloadBlocks === 0 ? 0 : payloadBlocks + Math.floor((payloadBlocks - 1) / chunkRatio);
  return { blockSize, chunkRatio, payloadBlocks, entries };
}

/** The BAT entry of guest block `block`. */
export function batIndex(g: BatGeometry, block: number): number {
  return block + Math.floor(block / g.chunkRatio);
}

/** The BAT in memory, as it is on disk (little-endian u64 entries: a 3-bit state, a file offset in MiB from bit 20). */
export class Bat {
  readonly bytes: Uint8Array;
  private readonly view: DataView;

  constructor(
    readonly g: BatGeometry,
    bytes: Uint8Array,
  ) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** The state of guest block `block`. */
  state(block: number): number {
    return this.bytes[batIndex(this.g, block) * 8] & L.BAT_STATE_MASK;
  }

  /** The file offset guest block `block` points at (Infinity if beyond 2^53, which no file reaches). */
  fileOffset(block: number): number {
    return this.entryOffset(batIndex(this.g, block));
  }

  private entryOffset(i: number): number {
    const lo = this.view.getUint32(i * 8, true) & 0xfff00000;
    const hi = this.view.getUint32(i * 8 + 4, true);
    return hi >= 0x200000 ? Number.POSITIVE_INFINITY : hi * 2 ** 32 + (lo >>> 0);
  }

  /** Sets guest block `block`'s entry; returns its index (its bytes are at index * 8). */
  set(block: number, state: number, fileOffset: number): number {
    const i = batIndex(this.g, block);
    this.view.setUint32(i * 8, ((fileOffset % 2 ** 32) | state) >>> 0, true);
    this.view.setUint32(i * 8 + 4, Math.floor(fileOffset / 2 ** 32), true);
    return i;
  }

  /**
   * Guest blocks from `block` on (at least 1, at most `max`, within the disk) that are fully
   * present and each right after the one before in the file: a range over them is one file range.
   * The caller has checked that `block` is fully present.
   */
  presentRun(block: number, max: number): number {
    const last = Math.min(this.g.payloadBlocks, block + max);
    let host = this.fileOffset(block);
    let b = block + 1;
    for (; b < last; b++) {
      const next = this.fileOffset(b);
      if (this.state(b) !== L.PAYLOAD_BLOCK_FULLY_PRESENT || next !== host + this.g.blockSize || !Number.isFinite(next)) break;
      host = next;
    }
    return b - block;
  }

  /** The BAT index of the sector bitmap entry of chunk `chunk` (it follows the chunk's payload entries). */
  bitmapIndex(chunk: number): number {
    return chunk * (this.g.chunkRatio + 1) + this.g.chunkRatio;
  }

  /** State and file offset of BAT entry `i` (payload or sector bitmap). */
  entryState(i: number): number {
    return this.bytes[i * 8] & L.BAT_STATE_MASK;
  }

  entryFileOffset(i: number): number {
    return this.entryOffset(i);
  }

  /**
   * Checks every payload block with data (fully present; partially present in a differencing
   * image) and every present sector bitmap block (QEMU vhdx_check_bat_entries, and more): inside
   * the file (the last payload block may end early when the disk does), clear of the header
   * section, log, BAT and metadata, and of every other block.
   */
  validate(fileLength: number, virtualSize: number, regions: readonly FileRegion[], batStart: number, nodeName: string, hasParent: boolean, found?: (e: BlockError) => void): void {
    const { blockSize, payloadBlocks, chunkRatio } = this.g;
    // Without `found` the first problem is thrown (an open); with it, each is reported and the scan goes on (a check).
    const report =
      found ??
      ((e: BlockError) => {
        throw e;
      });
    const used: { start: number; end: number; at: number }[] = [];
    const claim = (what: string, i: number, offset: number, length: number, span: number) => {
      const at = batStart + i * 8;
      if (offset < L.HEADER_SECTION_BYTES) return report(new BlockError('ECORRUPT', `vhdx: BAT entry of ${what} points into the header section (${offset})`, { node: nodeName, field: 'bat', offset: at }));
      if (offset + length > fileLength) {
        return report(new BlockError('ECORRUPT', `vhdx: BAT entry of ${what} points past the end of the file (${offset} + ${length} > ${fileLength}); the image has probably been truncated`, { node: nodeName, field: 'bat', offset: at }));
      }
      for (const r of regions) {
        if (offset < r.end && r.start < offset + span) return report(new BlockError('ECORRUPT', `vhdx: BAT entry of ${what} (${offset}) overlaps the ${r.name}`, { node: nodeName, field: 'bat', offset: at }));
      }
      used.push({ start: offset, end: offset + span, at });
    };
    for (let b = 0; b < payloadBlocks; b++) {
      const state = this.state(b);
      if (state !== L.PAYLOAD_BLOCK_FULLY_PRESENT && !(hasParent && state === L.PAYLOAD_BLOCK_PARTIALLY_PRESENT)) continue;
      claim(`block ${b}`, batIndex(this.g, b), this.fileOffset(b), Math.min(blockSize, virtualSize - b * blockSize), blockSize);
    }
    if (hasParent) {
      for (let c = 0; c * chunkRatio < payloadBlocks; c++) {
        const i = this.bitmapIndex(c);
        if (this.entryState(i) === L.SB_BLOCK_PRESENT) claim(`the sector bitmap of chunk ${c}`, i, this.entryOffset(i), L.SECTOR_BITMAP_BYTES, L.SECTOR_BITMAP_BYTES);
      }
    }
    used.sort((a, b) => a.start - b.start);
    for (let i = 1; i < used.length; i++) {
      if (used[i].start < used[i - 1].end) {
        report(new BlockError('ECORRUPT', `vhdx: two BAT entries point at overlapping blocks (${used[i - 1].start} and ${used[i].start})`, { node: nodeName, field: 'bat', offset: used[i].at }));
      }
    }
  }
}
