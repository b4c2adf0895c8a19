import { BlockError } from '../../errors.js';
import { type BlockStatus, type DriverInstance, SETTLED } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { AsyncLock } from '../qcow2/async-lock.js';
import { batIndex } from './bat.js';
import { guidText } from './guid.js';
import * as L from './limits.js';
import type { OpenedVhdx } from './open.js';
import { SectorBitmaps } from './sector-bitmap.js';

const ZERO_TAIL = new Uint8Array(L.LOG_SECTOR_BYTES);
/** Piece size when a new block of a differencing image is filled from its parent. */
const COPY_PIECE = L.MiB;

/** States of blocks without data in the file that read as zeros (in a differencing image, ZERO and UNMAPPED). */
function noDataState(state: number): boolean {
  return state === L.PAYLOAD_BLOCK_NOT_PRESENT || state === L.PAYLOAD_BLOCK_UNDEFINED || state === L.PAYLOAD_BLOCK_ZERO || state === L.PAYLOAD_BLOCK_UNMAPPED || state === L.PAYLOAD_BLOCK_UNMAPPED_V095;
}

/** The operations of an open VHDX node; `parent` is the parent of a differencing image (absent: its unwritten blocks read as zeros). */
export function vhdxInstance(file: BlockNode, o: OpenedVhdx, writable: boolean, nodeName: string, parent?: BlockNode): DriverInstance {
  const { bat, meta } = o;
  const blockSize = meta.blockSize;
  const size = meta.virtualSize;
  const batStart = o.regions.bat.start;
  const hasParent = meta.hasParent;
  const bitmaps = hasParent ? new SectorBitmaps(file, bat, meta.logicalSectorSize) : undefined;
  // Allocations (file growth and BAT updates) go one at a time; data I/O to present blocks runs outside.
  const allocation = new AsyncLock();
  let firstWrite: Promise<void> | undefined;

  /** In a differencing image, blocks not present (or undefined) read from the parent (spec 2.5.1). */
  const fromParent = (state: number) => hasParent && (state === L.PAYLOAD_BLOCK_NOT_PRESENT || state === L.PAYLOAD_BLOCK_UNDEFINED);
  const partial = (state: number) => hasParent && state === L.PAYLOAD_BLOCK_PARTIALLY_PRESENT;

  /** A state we cannot read: partially present without parent, 4 (undefined) (QEMU: EIO). */
  const badState = (block: number, state: number) =>
    new BlockError('ECORRUPT', `vhdx: block ${block} has BAT state ${state}, which this image cannot have`, { node: nodeName, field: 'bat', offset: batStart + batIndex(bat.g, block) * 8 });

  /** `part.length` bytes at `host` of the file, zeros past its end (the last block may end early). */
  const readHost = async (host: number, part: Uint8Array): Promise<void> => {
    const n = Math.max(0, Math.min(part.length, file.length - host));
    if (n > 0) await file.read(host, part.subarray(0, n));
    if (n < part.length) part.fill(0, n);
  };

  const readParent = async (offset: number, part: Uint8Array): Promise<void> => {
    const n = parent ? Math.max(0, Math.min(part.length, parent.length - offset)) : 0;
    if (n > 0) await parent!.read(offset, part.subarray(0, n));
    if (n < part.length) part.fill(0, n);
  };

  const readBlockPart = async (block: number, inBlock: number, part: Uint8Array): Promise<void> => {
    const state = bat.state(block);
    const guest = block * blockSize + inBlock;
    if (state === L.PAYLOAD_BLOCK_FULLY_PRESENT) return readHost(bat.fileOffset(block) + inBlock, part);
    if (fromParent(state)) return readParent(guest, part);
    if (noDataState(state)) return void part.fill(0);
    if (!partial(state)) throw badState(block, state);
    let pos = 0;
    while (pos < part.length) {
      const run = await bitmaps!.run(block, inBlock + pos, part.length - pos);
      const piece = part.subarray(pos, pos + run.length);
      if (run.present) await readHost(bat.fileOffset(block) + inBlock + pos, piece);
      else await readParent(guest + pos, piece);
      pos += run.length;
    }
  };

  const read = async (offset: number, buffer: Uint8Array): Promise<void> => {
    let pos = 0;
    while (pos < buffer.length) {
      const block = Math.floor((offset + pos) / blockSize);
      const inBlock = offset + pos - block * blockSize;
      const rest = buffer.length - pos;
      if (bat.state(block) === L.PAYLOAD_BLOCK_FULLY_PRESENT) {
        // Fully present blocks that follow each other in the file: one file read.
        const n = Math.min(rest, bat.presentRun(block, Math.ceil((inBlock + rest) / blockSize)) * blockSize - inBlock);
        await readHost(bat.fileOffset(block) + inBlock, buffer.subarray(pos, pos + n));
        pos += n;
        continue;
      }
      const n = Math.min(rest, blockSize - inBlock);
      await readBlockPart(block, inBlock, buffer.subarray(pos, pos + n));
      pos += n;
    }
  };

  /**
   * The common read, within one block that is fully present (one file read, no sub-array, no
   * async frame: as cheap as the raw driver's) or that reads as zeros in an image without parent
   * (settled at once); anything else (block boundaries, the file's short last block, parents,
   * partial blocks, bad states) takes {@link read}.
   */
  const readFast = (offset: number, buffer: Uint8Array): Promise<void> => {
    const length = buffer.length;
    const block = Math.floor(offset / blockSize);
    const inBlock = offset - block * blockSize;
    if (inBlock + length <= blockSize) {
      const state = bat.state(block);
      if (state === L.PAYLOAD_BLOCK_FULLY_PRESENT) {
        const host = bat.fileOffset(block) + inBlock;
        if (host + length <= file.length) return file.read(host, buffer);
      } else if (!hasParent && noDataState(state)) {
        buffer.fill(0);
        return SETTLED;
      }
    }
    return read(offset, buffer);
  };

  // QEMU vhdx_user_visible_write: a new data write GUID in both headers before the first visible change.
  const beforeVisibleWrite = (): Promise<void> => {
    firstWrite ??= o.headers.update(true).catch((e) => {
      firstWrite = undefined; // a failed update is tried again by the next write
      throw e;
    });
    return firstWrite;
  };

  /** Copies the parent's bytes of guest block `block` in [from, to) to the same place of the block at `host`. */
  const copyFromParent = async (block: number, host: number, from: number, to: number): Promise<void> => {
    if (!parent) return;
    const piece = new Uint8Array(Math.min(COPY_PIECE, to - from));
    for (let pos = from; pos < to; pos += COPY_PIECE) {
      const part = piece.subarray(0, Math.min(COPY_PIECE, to - pos));
      await readParent(block * blockSize + pos, part);
      if (part.some((x) => x !== 0)) await file.write(host + pos, part, true);
    }
  };

  /** Writes the BAT entry of `block` in place; on failure the entry in memory goes back to what is on disk. */
  const writeEntry = async (block: number, state: number, host: number, was: { state: number; host: number }): Promise<void> => {
    const i = bat.set(block, state, host);
    try {
      await file.write(batStart + i * 8, bat.bytes.subarray(i * 8, i * 8 + 8));
    } catch (e) {
      bat.set(block, was.state, was.host);
      throw e;
    }
  };

  /**
   * Gives guest block `block` a payload block holding `part` at `inBlock`: at the end of the file
   * (1 MiB aligned), filled from the parent first in a differencing image; a partially present
   * block gets its missing sectors from the parent where it is. Crash-safe without the log: the
   * data goes first and is flushed, then the one 8-byte BAT entry (aligned, inside one sector) is
   * written in place. A crash before the entry leaves an unreferenced block past the old end (space,
   * no data lost or exposed); after it, the entry points at flushed data. The file is grown to the
   * block's end, as QEMU truncates it.
   */
  const allocate = async (block: number, inBlock: number, part: Uint8Array): Promise<void> => {
    await allocation.acquire();
    try {
      const state = bat.state(block);
      if (state === L.PAYLOAD_BLOCK_FULLY_PRESENT) return void (await file.write(bat.fileOffset(block) + inBlock, part));
      const blockEnd = Math.min(blockSize, size - block * blockSize);
      const was = { state, host: bat.fileOffset(block) };
      let host: number;
      if (partial(state)) {
        host = was.host;
        for (let pos = 0; pos < blockEnd; ) {
          const run = await bitmaps!.run(block, pos, blockEnd - pos);
          if (!run.present) await copyFromParent(block, host, pos, pos + run.length);
          pos += run.length;
        }
      } else if (noDataState(state)) {
        host = Math.ceil(file.length / L.MiB) * L.MiB;
        const tailStart = Math.max(inBlock + part.length, blockSize - ZERO_TAIL.length);
        if (tailStart < blockSize) await file.write(host + tailStart, ZERO_TAIL.subarray(0, blockSize - tailStart), true);
        if (fromParent(state)) {
          await copyFromParent(block, host, 0, inBlock);
          await copyFromParent(block, host, inBlock + part.length, blockEnd);
        }
      } else throw badState(block, state);
      await file.write(host + inBlock, part, true);
      await file.flush();
      await writeEntry(block, L.PAYLOAD_BLOCK_FULLY_PRESENT, host, was);
    } finally {
      allocation.release();
    }
  };

  const write = async (offset: number, data: Uint8Array): Promise<void> => {
    await beforeVisibleWrite();
    let pos = 0;
    while (pos < data.length) {
      const block = Math.floor((offset + pos) / blockSize);
      const inBlock = offset + pos - block * blockSize;
      const n = Math.min(data.length - pos, blockSize - inBlock);
      const part = data.subarray(pos, pos + n);
      if (bat.state(block) === L.PAYLOAD_BLOCK_FULLY_PRESENT) await file.write(bat.fileOffset(block) + inBlock, part);
      else await allocate(block, inBlock, part);
      pos += n;
    }
  };

  /**
   * Present blocks get zeros written (QEMU has no zero write for vhdx and writes zero buffers the
   * same way); blocks that read as zeros stay as they are. In a differencing image, a block that
   * would show its parent becomes ZERO when the range covers it, else gets zeros written.
   */
  const writeZeroes = async (offset: number, length: number): Promise<void> => {
    await beforeVisibleWrite();
    let pos = 0;
    while (pos < length) {
      const block = Math.floor((offset + pos) / blockSize);
      const inBlock = offset + pos - block * blockSize;
      const n = Math.min(length - pos, blockSize - inBlock);
      await allocation.acquire(); // an allocation of this block in flight finishes first
      allocation.release();
      const state = bat.state(block);
      const whole = inBlock === 0 && (n === blockSize || block * blockSize + n === size);
      if (state === L.PAYLOAD_BLOCK_FULLY_PRESENT) {
        const host = bat.fileOffset(block) + inBlock;
        const m = Math.min(n, file.length - host); // the last block may end early in the file
        if (m > 0) await file.writeZeroes(host, m);
      } else if ((fromParent(state) || partial(state)) && whole) {
        await allocation.acquire();
        try {
          if (bat.state(block) === state) await writeEntry(block, L.PAYLOAD_BLOCK_ZERO, 0, { state, host: bat.fileOffset(block) });
        } finally {
          allocation.release();
        }
        if (bat.state(block) !== L.PAYLOAD_BLOCK_ZERO) await write(offset + pos, new Uint8Array(n));
      } else if (fromParent(state) || partial(state)) await allocate(block, inBlock, new Uint8Array(n));
      else if (!noDataState(state)) throw badState(block, state);
      pos += n;
    }
  };

  const parentStatus = async (offset: number, n: number): Promise<BlockStatus> => {
    if (parent && offset < parent.length) {
      const s = await parent.blockStatus(offset, Math.min(n, parent.length - offset));
      return { ...s, offset, depth: s.depth + 1 };
    }
    return { offset, length: n, data: false, zero: true, allocated: false, depth: 0 };
  };

  /**
   * Data in this image from `host` on (at most `n` bytes); the file is asked for holes under it
   * (zeros a reader need not read: one or two lseeks per extent, measured cheaper here than reading
   * the holes; QEMU's vhdx has no block status and reports everything as data).
   */
  const presentStatus = async (offset: number, host: number, n: number): Promise<BlockStatus> => {
    let zero = true;
    if (host < file.length) {
      const f = await file.blockStatus(host, Math.min(n, file.length - host));
      zero = f.zero;
      n = f.length;
    }
    return { offset, length: n, data: true, zero, allocated: true, depth: 0, hostOffset: host, hostNode: file.name };
  };

  const blockStatus = async (offset: number, length: number): Promise<BlockStatus> => {
    const block = Math.floor(offset / blockSize);
    const inBlock = offset - block * blockSize;
    const state = bat.state(block);
    let n = Math.min(length, blockSize - inBlock);
    if (state === L.PAYLOAD_BLOCK_FULLY_PRESENT) {
      // Following blocks join while they are fully present and lie right after it in the file: one extent, one question to the file.
      n = Math.min(length, bat.presentRun(block, Math.ceil((inBlock + length) / blockSize)) * blockSize - inBlock);
      return presentStatus(offset, bat.fileOffset(block) + inBlock, n);
    }
    if (fromParent(state)) return parentStatus(offset, n);
    if (partial(state)) {
      const run = await bitmaps!.run(block, inBlock, n);
      return run.present ? presentStatus(offset, bat.fileOffset(block) + inBlock, run.length) : parentStatus(offset, run.length);
    }
    if (!noDataState(state)) throw badState(block, state);
    // runs of blocks in the same state report as one extent
    const allocated = state === L.PAYLOAD_BLOCK_ZERO;
    let next = block + 1;
    while (n < length && next < bat.g.payloadBlocks) {
      const s = bat.state(next);
      if (!noDataState(s) || fromParent(s) || (s === L.PAYLOAD_BLOCK_ZERO) !== allocated) break;
      n = Math.min(length, (next + 1) * blockSize - offset);
      next++;
    }
    return { offset, length: n, data: false, zero: true, allocated, depth: 0 };
  };

  const readOnlyError = () => Promise.reject(new BlockError('EROFS', 'vhdx: the node is read-only', { node: nodeName }));

  return {
    alignment: 1,
    length: () => size,
    read: readFast,
    write: writable ? write : readOnlyError,
    writeZeroes: writable ? writeZeroes : readOnlyError,
    // VHDX blocks are never given back (QEMU has no discard for vhdx): a hint that does nothing.
    discard: writable ? async () => {} : readOnlyError,
    flush: () => (writable ? file.flush() : Promise.resolve()),
    blockStatus,
    async close() {
      if (writable) await file.flush();
    },
    info: () => ({
      format: 'vhdx',
      virtualSize: size,
      clusterSize: blockSize,
      subformat: meta.leaveBlocksAllocated ? 'fixed' : 'dynamic',
      blockSize,
      logicalSectorSize: meta.logicalSectorSize,
      physicalSectorSize: meta.physicalSectorSize,
      page83: meta.page83,
      logSize: o.headers.header.logLength,
      logReplayed: o.logReplayed,
      dataWriteGuid: `{${guidText(o.headers.header.dataWriteGuid)}}`,
      hasParent,
      parentLocator: meta.parentLocator?.entries,
      backingNode: parent?.name,
    }),
  };
}
