import type { BlockNode } from '../../node/node.js';
import type { Bat } from './bat.js';
import * as L from './limits.js';

/**
 * Sector bitmaps of a differencing image: which sectors of a partially present block the image
 * holds (bit set) and which come from the parent. One bitmap block covers a chunk of
 * `chunkRatio` payload blocks, a bit per logical sector, least significant bit first.
 */
export class SectorBitmaps {
  private readonly sectorsPerBlock: number;

  constructor(
    private readonly file: BlockNode,
    private readonly bat: Bat,
    private readonly sectorSize: number,
  ) {
    this.sectorsPerBlock = bat.g.blockSize / sectorSize;
  }

  /**
   * The run of bytes from `inBlock` of guest block `block` (at most `length`) whose sectors are all
   * present in the image, or all absent: `present` and the run's length.
   */
  async run(block: number, inBlock: number, length: number): Promise<{ present: boolean; length: number }> {
    const { chunkRatio } = this.bat.g;
    const i = this.bat.bitmapIndex(Math.floor(block / chunkRatio));
    // No bitmap block: no sector of the chunk is present.
    if (this.bat.entryState(i) !== L.SB_BLOCK_PRESENT) return { present: false, length };
    const base = (block % chunkRatio) * this.sectorsPerBlock;
    const first = base + Math.floor(inBlock / this.sectorSize);
    const last = base + Math.floor((inBlock + length - 1) / this.sectorSize);
    const byte0 = first >> 3;
    const bytes = new Uint8Array((last >> 3) - byte0 + 1);
    await this.file.read(this.bat.entryFileOffset(i) + byte0, bytes);
    const bit = (s: number) => (bytes[(s >> 3) - byte0] >> (s & 7)) & 1;
    const present = bit(first);
    let s = first + 1;
    while (s <= last && bit(s) === present) s++;
    const end = Math.min((s - base) * this.sectorSize, inBlock + length);
    return { present: present === 1, length: end - inBlock };
  }
}
