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
   * Checks every fully present payload block (QEMU vhdx_check_bat_entries, and more): inside the
   * file (the last block may end early when the disk does), clear of the header section, log,
   * BAT and metadata, and of every other block.
   */
  validate(fileLength: number, virtualSize: number, regions: readonly FileRegion[], batStart: number, nodeName: string, found?: (e: BlockError) => void): void {
    const { blockSize, payloadBlocks } = this.g;
    // Without `found` the first problem is thrown (an open); with it, each is reported and the scan goes on (a check).
    const report =
      found ??
      ((e: BlockError) => {
        throw e;
      });
    const starts: number[] = [];
    for (let b = 0; b < payloadBlocks; b++) {
      const state = this.state(b);
      if (state !== L.PAYLOAD_BLOCK_FULLY_PRESENT) continue;
      const at = batStart + batIndex(this.g, b) * 8;
      const offset = this.fileOffset(b);
      const length = Math.min(blockSize, virtualSize - b * blockSize);
      if (offset < L.HEADER_SECTION_BYTES) report(new BlockError('ECORRUPT', `vhdx: BAT entry of block ${b} points into the header section (${offset})`, { node: nodeName, field: 'bat', offset: at }));
      if (offset + length > fileLength) {
        report(new BlockError('ECORRUPT', `vhdx: BAT entry of block ${b} points past the end of the file (${offset} + ${length} > ${fileLength}); the image has probably been truncated`, { node: nodeName, field: 'bat', offset: at }));
      }
      for (const r of regions) {
        if (offset < r.end && r.start < offset + blockSize) report(new BlockError('ECORRUPT', `vhdx: BAT entry of block ${b} (${offset}) overlaps the ${r.name}`, { node: nodeName, field: 'bat', offset: at }));
      }
      starts.push(offset);
    }
    starts.sort((a, b) => a - b);
    for (let i = 1; i < starts.length; i++) {
      if (starts[i] - starts[i - 1] < blockSize) {
        report(new BlockError('ECORRUPT', `vhdx: two BAT entries point at overlapping blocks (${starts[i - 1]} and ${starts[i]}, blocks of ${blockSize} bytes)`, { node: nodeName, field: 'bat', offset: starts[i] }));
      }
    }
  }
}
