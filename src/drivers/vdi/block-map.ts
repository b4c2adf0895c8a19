import { BlockError } from '../../errors.js';
import { blockMapBytes, type VdiHeader } from './header.js';
import * as L from './limits.js';

/**
 * The block map in memory as it is on disk (little-endian entries, whole sectors), so that a
 * changed entry is written back with the sector that holds it.
 */
export class BlockMap {
  readonly bytes: Uint8Array;
  private readonly view: DataView;

  constructor(
    bytes: Uint8Array,
    /** Entries in use (blocks_in_image); the sector padding after them is not. */
    readonly blocks: number,
  ) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** A map of `blocks` entries, all {@link L.BLOCK_UNALLOCATED} (dynamic) or each block its own index (static). */
  static fresh(blocks: number, staticImage: boolean): BlockMap {
    const m = new BlockMap(new Uint8Array(blockMapBytes(blocks)), blocks);
    for (let b = 0; b < blocks; b++) m.set(b, staticImage ? b : L.BLOCK_UNALLOCATED);
    return m;
  }

  /** The entry of guest block `b`: an index into the data area, or {@link L.BLOCK_UNALLOCATED} / {@link L.BLOCK_ZERO}. */
  get(b: number): number {
    return this.view.getUint32(b * L.ENTRY_BYTES, true);
  }

  set(b: number, entry: number): void {
    this.view.setUint32(b * L.ENTRY_BYTES, entry, true);
  }

  /** The whole sector of the map that holds entry `b`, and its byte offset within the map. */
  sectorOf(b: number): { at: number; data: Uint8Array } {
    const at = Math.floor((b * L.ENTRY_BYTES) / L.SECTOR_SIZE) * L.SECTOR_SIZE;
    return { at, data: this.bytes.subarray(at, at + L.SECTOR_SIZE) };
  }
}

/**
 * The byte ranges [from, to) of the map that the sectors starting at `starts` (byte offsets, any
 * order) cover, sectors that follow each other joined into one range, in ascending order.
 */
export function sectorRuns(starts: Iterable<number>): [number, number][] {
  const sorted = [...starts].sort((x, y) => x - y);
  const runs: [number, number][] = [];
  for (const at of sorted) {
    const last = runs.at(-1);
    if (last !== undefined && last[1] === at) last[1] = at + L.SECTOR_SIZE;
    else if (last === undefined || last[1] < at) runs.push([at, at + L.SECTOR_SIZE]); // (a repeated start adds nothing)
  }
  return runs;
}

/** True when an entry points at a block of data (not unallocated, not zero). */
export const isAllocated = (entry: number): boolean => entry < L.BLOCK_ZERO;

/** What the check of a block map found: what a writer needs to allocate without overlap. */
export interface BlockMapFacts {
  /** Entries that point at data. */
  allocated: number;
  /** The first data block index no entry uses and the header does not count (QEMU allocates at blocks_allocated). */
  nextIndex: number;
}

/**
 * Checks every entry: a data block index below blocks_in_image, used by one guest block only,
 * whose whole block lies in the file. ECORRUPT names the entry and its byte offset otherwise.
 */
export function checkBlockMap(map: BlockMap, h: VdiHeader, fileLength: number): BlockMapFacts {
  const used = new Uint8Array(Math.ceil(h.blocksInImage / 8));
  let allocated = 0;
  let top = 0;
  for (let b = 0; b < h.blocksInImage; b++) {
    const e = map.get(b);
    if (!isAllocated(e)) continue;
    const at = h.offsetBmap + b * L.ENTRY_BYTES;
    const where = { field: 'block_map', offset: at };
    if (e >= h.blocksInImage) {
      throw new BlockError('ECORRUPT', `vdi block map: entry ${b} (at byte ${at}) points at block ${e}, not below blocks_in_image ${h.blocksInImage}`, where);
    }
    if (used[e >> 3] & (1 << (e & 7))) {
      throw new BlockError('ECORRUPT', `vdi block map: entry ${b} (at byte ${at}) points at block ${e}, which another entry uses too`, where);
    }
    used[e >> 3] |= 1 << (e & 7);
    const end = h.offsetData + (e + 1) * h.blockSize;
    if (end > fileLength) {
      throw new BlockError('ECORRUPT', `vdi block map: entry ${b} (at byte ${at}) points at block ${e}, which ends at ${end}, past the end of the file (${fileLength} bytes)`, where);
    }
    allocated++;
    if (e + 1 > top) top = e + 1;
  }
  return { allocated, nextIndex: Math.max(top, h.blocksAllocated) };
}
