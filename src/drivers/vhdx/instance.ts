import { BlockError } from '../../errors.js';
import type { BlockStatus, DriverInstance } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { AsyncLock } from '../qcow2/async-lock.js';
import { batIndex } from './bat.js';
import * as L from './limits.js';
import type { OpenedVhdx } from './open.js';

const ZERO_TAIL = new Uint8Array(L.LOG_SECTOR_BYTES);

/** Whether a payload block in `state` reads as zeros without data in the file (every state but present ones, in an image without parent). */
function readsZero(state: number): boolean {
  return state === L.PAYLOAD_BLOCK_NOT_PRESENT || state === L.PAYLOAD_BLOCK_UNDEFINED || state === L.PAYLOAD_BLOCK_ZERO || state === L.PAYLOAD_BLOCK_UNMAPPED || state === L.PAYLOAD_BLOCK_UNMAPPED_V095;
}

/** The operations of an open VHDX node. */
export function vhdxInstance(file: BlockNode, o: OpenedVhdx, writable: boolean, nodeName: string): DriverInstance {
  const { bat, meta } = o;
  const blockSize = meta.blockSize;
  const size = meta.virtualSize;
  const batStart = o.regions.bat.start;
  // Allocations (file growth and BAT updates) go one at a time; data I/O to present blocks runs outside.
  const allocation = new AsyncLock();
  let firstWrite: Promise<void> | undefined;

  /** A state we cannot read: partially present blocks belong to differencing images, 4 is undefined (QEMU: EIO). */
  const badState = (block: number, state: number) =>
    new BlockError('ECORRUPT', `vhdx: block ${block} has BAT state ${state}, which an image without parent cannot have`, { node: nodeName, field: 'bat', offset: batStart + batIndex(bat.g, block) * 8 });

  const readBlockPart = async (block: number, inBlock: number, part: Uint8Array): Promise<void> => {
    const state = bat.state(block);
    if (readsZero(state)) return void part.fill(0);
    if (state !== L.PAYLOAD_BLOCK_FULLY_PRESENT) throw badState(block, state);
    const host = bat.fileOffset(block) + inBlock;
    // The last block of an image may end inside the file's last MiB (QEMU allows that): zeros past the end.
    const n = Math.max(0, Math.min(part.length, file.length - host));
    if (n > 0) await file.read(host, part.subarray(0, n));
    if (n < part.length) part.fill(0, n);
  };

  const read = async (offset: number, buffer: Uint8Array): Promise<void> => {
    let pos = 0;
    while (pos < buffer.length) {
      const block = Math.floor((offset + pos) / blockSize);
      const inBlock = offset + pos - block * blockSize;
      const n = Math.min(buffer.length - pos, blockSize - inBlock);
      await readBlockPart(block, inBlock, buffer.subarray(pos, pos + n));
      pos += n;
    }
  };

  // QEMU vhdx_user_visible_write: a new data write GUID in both headers before the first visible change.
  const beforeVisibleWrite = (): Promise<void> => {
    firstWrite ??= o.headers.update(true).catch((e) => {
      firstWrite = undefined; // a failed update is tried again by the next write
      throw e;
    });
    return firstWrite;
  };

  /**
   * Gives guest block `block` a payload block at the end of the file (1 MiB aligned) holding `part`
   * at `inBlock`. Crash-safe without the log: the data goes first and is flushed, then the one
   * 8-byte BAT entry (aligned, inside one sector) is written in place. A crash before the entry
   * leaves an unreferenced block past the old end (space, no data lost or exposed); after it, the
   * entry points at flushed data. The file is grown to the block's end, as QEMU truncates it.
   */
  const allocate = async (block: number, inBlock: number, part: Uint8Array): Promise<void> => {
    await allocation.acquire();
    try {
      const state = bat.state(block);
      if (state === L.PAYLOAD_BLOCK_FULLY_PRESENT) return void (await file.write(bat.fileOffset(block) + inBlock, part));
      if (!readsZero(state)) throw badState(block, state);
      const host = Math.ceil(file.length / L.MiB) * L.MiB;
      const tailStart = Math.max(inBlock + part.length, blockSize - ZERO_TAIL.length);
      if (tailStart < blockSize) await file.write(host + tailStart, ZERO_TAIL.subarray(0, blockSize - tailStart), true);
      await file.write(host + inBlock, part, true);
      await file.flush();
      const i = bat.set(block, L.PAYLOAD_BLOCK_FULLY_PRESENT, host);
      try {
        await file.write(batStart + i * 8, bat.bytes.subarray(i * 8, i * 8 + 8));
      } catch (e) {
        bat.set(block, state, 0); // keep the table as it is on disk
        throw e;
      }
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

  // Blocks that read as zeros stay as they are; present ones get zeros written (QEMU has no zero
  // write for vhdx and writes zero buffers the same way).
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
      if (state === L.PAYLOAD_BLOCK_FULLY_PRESENT) {
        const host = bat.fileOffset(block) + inBlock;
        const m = Math.min(n, file.length - host); // the last block may end early in the file
        if (m > 0) await file.writeZeroes(host, m);
      } else if (!readsZero(state)) throw badState(block, state);
      pos += n;
    }
  };

  const readOnlyError = () => Promise.reject(new BlockError('EROFS', 'vhdx: the node is read-only', { node: nodeName }));

  return {
    alignment: 1,
    length: () => size,
    read,
    write: writable ? write : readOnlyError,
    writeZeroes: writable ? writeZeroes : readOnlyError,
    // VHDX blocks are never given back (QEMU has no discard for vhdx): a hint that does nothing.
    discard: writable ? async () => {} : readOnlyError,
    flush: () => (writable ? file.flush() : Promise.resolve()),
    async blockStatus(offset, length): Promise<BlockStatus> {
      const block = Math.floor(offset / blockSize);
      const state = bat.state(block);
      let n = Math.min(length, (block + 1) * blockSize - offset);
      if (state === L.PAYLOAD_BLOCK_FULLY_PRESENT) {
        const host = bat.fileOffset(block) + offset - block * blockSize;
        let zero = true;
        if (host < file.length) {
          const f = await file.blockStatus(host, Math.min(n, file.length - host));
          zero = f.zero;
          n = f.length;
        }
        return { offset, length: n, data: true, zero, allocated: true, depth: 0, hostOffset: host, hostNode: file.name };
      }
      if (!readsZero(state)) throw badState(block, state);
      // runs of blocks in the same state report as one extent
      const allocated = state === L.PAYLOAD_BLOCK_ZERO;
      let next = block + 1;
      while (offset + n < offset + length && next < bat.g.payloadBlocks) {
        const s = bat.state(next);
        if (!readsZero(s) || (s === L.PAYLOAD_BLOCK_ZERO) !== allocated) break;
        n = Math.min(length, (next + 1) * blockSize - offset);
        next++;
      }
      return { offset, length: n, data: false, zero: true, allocated, depth: 0 };
    },
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
      hasParent: meta.hasParent,
    }),
  };
}
