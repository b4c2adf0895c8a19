import { BlockError } from '../../errors.js';
import { type BlockStatus, SETTLED } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { AsyncLock } from '../qcow2/async-lock.js';
import { readClamped } from '../qcow2/open-steps.js';
import { allSet, bitSet, runLength, setBits } from './bat.js';
import * as L from './limits.js';

/** What a dynamic or differencing image is made of once opened. */
export interface DynamicLayout {
  file: BlockNode;
  /** The footer as read (written again after each new block). */
  footer: Uint8Array;
  size: number;
  blockSize: number;
  bitmapSize: number;
  tableOffset: number;
  bat: Uint32Array;
  freeOffset: number;
  /** The parent of a differencing image (sectors whose bit is clear come from it). */
  parent: BlockNode | undefined;
  /** A differencing image (its bitmaps tell its sectors from its parent's, even with no parent open). */
  differencing: boolean;
  nodeName: string;
}

/**
 * Reads and writes of a dynamic or differencing VHD. A sector is in this image when its block is
 * in the BAT and its bit is set in the block's sector bitmap (as the specification says; QEMU
 * ignores the bitmaps, which is the same for the images it writes, whose bitmaps are all ones);
 * other sectors read from the parent, or as zeros.
 */
export class DynamicVhd {
  private readonly file: BlockNode;
  private readonly bat: Uint32Array;
  private readonly blockSize: number;
  private readonly bitmapSize: number;
  private readonly parent: BlockNode | undefined;
  private freeOffset: number;
  /** Bitmaps by block, as promises so that concurrent readers share one copy. */
  private readonly bitmaps = new Map<number, Promise<Uint8Array>>();
  /** The bitmaps of {@link bitmaps} that have been read, for the read shortcut (same blocks, same arrays). */
  private readonly loaded = new Map<number, Uint8Array>();
  /** Bitmaps kept (at least one, else as many as fit in the cache's bytes). */
  private readonly cacheEntries: number;
  /** Allocations and bitmap updates, one at a time (QEMU: s->lock). */
  private readonly metadata = new AsyncLock();

  constructor(private readonly m: DynamicLayout) {
    this.file = m.file;
    this.bat = m.bat;
    this.blockSize = m.blockSize;
    this.bitmapSize = m.bitmapSize;
    this.parent = m.parent;
    this.freeOffset = m.freeOffset;
    this.cacheEntries = Math.max(1, Math.floor(L.BITMAP_CACHE_BYTES / m.bitmapSize));
  }

  /** Blocks in the file (for info). */
  get allocatedBlocks(): number {
    let n = 0;
    for (const e of this.bat) if (e !== L.BAT_UNALLOCATED) n++;
    return n;
  }

  private entry(block: number): number {
    return block < this.bat.length ? this.bat[block] : L.BAT_UNALLOCATED;
  }

  private bitmap(block: number): Promise<Uint8Array> {
    const cached = this.bitmaps.get(block);
    if (cached) return cached;
    if (this.bitmaps.size >= this.cacheEntries) {
      const oldest = this.bitmaps.keys().next().value!;
      this.bitmaps.delete(oldest);
      this.loaded.delete(oldest);
    }
    const b = new Uint8Array(this.bitmapSize);
    const p: Promise<Uint8Array> = this.file.read(this.entry(block) * L.SECTOR_SIZE, b).then(() => {
      if (this.bitmaps.get(block) === p) this.loaded.set(block, b);
      return b;
    });
    this.bitmaps.set(block, p);
    p.catch(() => this.bitmaps.delete(block));
    return p;
  }

  /** Bytes not in this image: from the parent (zeros past its end), or zeros. */
  private readBelow(offset: number, target: Uint8Array): Promise<void> {
    if (this.parent) return readClamped(this.parent, offset, target);
    target.fill(0);
    return Promise.resolve();
  }

  /**
   * Reads [offset, offset + buffer.length) (whole sectors). The common read, within one block whose
   * bitmap is in memory and marks all its sectors (or one not in the file, without parent), is one
   * file read (or zeros settled at once) with no async frame; anything else takes {@link readParts}.
   */
  read(offset: number, buffer: Uint8Array): Promise<void> {
    const n = buffer.length;
    const block = Math.floor(offset / this.blockSize);
    const inBlock = offset - block * this.blockSize;
    if (inBlock + n <= this.blockSize) {
      const e = this.entry(block);
      if (e === L.BAT_UNALLOCATED) {
        if (this.parent === undefined) {
          buffer.fill(0);
          return SETTLED;
        }
      } else {
        const bitmap = this.loaded.get(block);
        if (bitmap !== undefined && allSet(bitmap, inBlock / L.SECTOR_SIZE, (inBlock + n) / L.SECTOR_SIZE)) return this.file.read(e * L.SECTOR_SIZE + this.bitmapSize + inBlock, buffer);
      }
    }
    return this.readParts(offset, buffer);
  }

  private async readParts(offset: number, buffer: Uint8Array): Promise<void> {
    let pos = 0;
    while (pos < buffer.length) {
      const at = offset + pos;
      const block = Math.floor(at / this.blockSize);
      const inBlock = at - block * this.blockSize;
      const n = Math.min(buffer.length - pos, this.blockSize - inBlock);
      const part = buffer.subarray(pos, pos + n);
      const e = this.entry(block);
      if (e === L.BAT_UNALLOCATED) await this.readBelow(at, part);
      else {
        const bitmap = await this.bitmap(block);
        const data = e * L.SECTOR_SIZE + this.bitmapSize;
        const first = inBlock / L.SECTOR_SIZE;
        const end = first + n / L.SECTOR_SIZE;
        for (let s = first; s < end; ) {
          const run = runLength(bitmap, s, end);
          const piece = part.subarray((s - first) * L.SECTOR_SIZE, (s - first + run) * L.SECTOR_SIZE);
          if (bitSet(bitmap, s)) await this.file.read(data + s * L.SECTOR_SIZE, piece);
          else await this.readBelow(block * this.blockSize + s * L.SECTOR_SIZE, piece);
          s += run;
        }
      }
      pos += n;
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    let pos = 0;
    while (pos < data.length) {
      const at = offset + pos;
      const block = Math.floor(at / this.blockSize);
      const inBlock = at - block * this.blockSize;
      const n = Math.min(data.length - pos, this.blockSize - inBlock);
      const part = data.subarray(pos, pos + n);
      const first = inBlock / L.SECTOR_SIZE;
      const end = first + n / L.SECTOR_SIZE;
      const e = this.entry(block);
      // The common case: the block is here and every sector already marked: data only.
      if (e !== L.BAT_UNALLOCATED && allSet(await this.bitmap(block), first, end)) {
        await this.file.write(e * L.SECTOR_SIZE + this.bitmapSize + inBlock, part);
      } else {
        await this.metadata.acquire();
        try {
          await this.writeMarking(block, inBlock, part, first, end);
        } finally {
          this.metadata.release();
        }
      }
      pos += n;
    }
  }

  /** A write whose sectors are not all marked yet (under the metadata lock): data first, then what points at it. */
  private async writeMarking(block: number, inBlock: number, part: Uint8Array, first: number, end: number): Promise<void> {
    if (this.entry(block) === L.BAT_UNALLOCATED) return this.allocate(block, inBlock, part, first, end);
    const e = this.entry(block);
    await this.file.write(e * L.SECTOR_SIZE + this.bitmapSize + inBlock, part);
    const bitmap = await this.bitmap(block);
    if (allSet(bitmap, first, end)) return;
    // The data must be durable before a bit says it is here: a crash in between would show
    // stale bytes where the parent's (or zeros) were.
    await this.file.flush();
    setBits(bitmap, first, end);
    // Only the bitmap's sectors that changed.
    const from = Math.floor(first / 8 / L.SECTOR_SIZE) * L.SECTOR_SIZE;
    const to = Math.min(this.bitmapSize, Math.ceil(end / 8 / L.SECTOR_SIZE) * L.SECTOR_SIZE);
    await this.file.write(e * L.SECTOR_SIZE + from, bitmap.subarray(from, to));
    this.bitmaps.set(block, Promise.resolve(bitmap));
    this.loaded.set(block, bitmap);
  }

  /**
   * A new block at the end of the file: its data, its bitmap (over the old footer), the footer
   * after it, a flush, then the BAT entry that makes it part of the image. A crash before the
   * entry leaves the image as it was (the dynamic image's footer copy at offset 0 stays valid).
   */
  private async allocate(block: number, inBlock: number, part: Uint8Array, first: number, end: number): Promise<void> {
    const start = this.freeOffset;
    const sector = start / L.SECTOR_SIZE;
    if (sector > L.MAX_BAT_SECTOR || block >= this.bat.length) {
      throw new BlockError('ENOSPC', `vpc: no room for block ${block}: the BAT cannot address offset ${start}`, { node: this.m.nodeName, offset: block * this.blockSize });
    }
    const dataStart = start + this.bitmapSize;
    const footerAt = dataStart + this.blockSize;
    // Bytes past the old footer (a file longer than its image) would show in the new block.
    if (this.file.length > start + L.FOOTER_SIZE) {
      const upTo = Math.min(footerAt, this.file.length);
      if (upTo > dataStart) await this.file.writeZeroes(dataStart, upTo - dataStart);
    }
    await this.file.write(dataStart + inBlock, part, true);
    const bitmap = new Uint8Array(this.bitmapSize);
    // A dynamic image's new block is all zeros but what is written: every sector may be marked
    // at once (as QEMU does), so later writes to the block need no bitmap update. A
    // differencing image marks only what it holds: the rest is its parent's.
    if (this.m.differencing) setBits(bitmap, first, end);
    else bitmap.fill(0xff);
    await this.file.write(start, bitmap, true);
    await this.file.write(footerAt, this.m.footer, true);
    await this.file.flush();
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, sector);
    await this.file.write(this.m.tableOffset + block * 4, entry);
    this.freeOffset = footerAt;
    this.bat[block] = sector;
    this.bitmaps.set(block, Promise.resolve(bitmap));
    this.loaded.set(block, bitmap);
  }

  /** Zeros: nothing to do in a dynamic image's blocks that are not stored; elsewhere zeros are written. */
  async writeZeroes(offset: number, length: number, zeros: Uint8Array): Promise<void> {
    let pos = 0;
    while (pos < length) {
      const at = offset + pos;
      const block = Math.floor(at / this.blockSize);
      const n = Math.min(length - pos, (block + 1) * this.blockSize - at);
      // A differencing image writes its zeros even with no parent open: one would show through later.
      if (this.entry(block) !== L.BAT_UNALLOCATED || this.m.differencing) {
        for (let k = 0; k < n; k += zeros.length) await this.write(at + k, zeros.subarray(0, Math.min(zeros.length, n - k)));
      }
      pos += n;
    }
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatus> {
    const block = Math.floor(offset / this.blockSize);
    const inBlock = offset - block * this.blockSize;
    let n = Math.min(length, this.blockSize - inBlock);
    const e = this.entry(block);
    if (e !== L.BAT_UNALLOCATED) {
      const bitmap = await this.bitmap(block);
      // A caller may ask from inside a sector: the run is counted in whole sectors from there.
      const first = Math.floor(inBlock / L.SECTOR_SIZE);
      n = Math.min(n, (first + runLength(bitmap, first, Math.ceil((inBlock + n) / L.SECTOR_SIZE))) * L.SECTOR_SIZE - inBlock);
      if (bitSet(bitmap, first)) {
        const host = e * L.SECTOR_SIZE + this.bitmapSize + inBlock;
        // Data for the run of marked sectors, the file not asked for holes under it, as QEMU's vpc
        // does (no BDRV_BLOCK_RECURSE): a block's data starts 512 bytes past a 4 KiB boundary, so
        // the file's holes cut each block into data slivers around them (a 1 GiB convert asked
        // four statuses, five lseeks and two 4 KiB reads more per block than it read holes).
        return { offset, length: n, data: true, zero: false, allocated: true, depth: 0, hostOffset: host, hostNode: this.file.name };
      }
    }
    if (this.parent && offset < this.parent.length) {
      const s = await this.parent.blockStatus(offset, Math.min(n, this.parent.length - offset));
      return { ...s, offset, depth: s.depth + 1 };
    }
    return { offset, length: n, data: false, zero: true, allocated: false, depth: 0 };
  }

  flush(): Promise<void> {
    return this.file.flush();
  }
}
