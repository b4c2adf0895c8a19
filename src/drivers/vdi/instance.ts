import { BlockError } from '../../errors.js';
import { type BlockStatus, type DriverInstance, SETTLED } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { AsyncLock } from '../qcow2/async-lock.js';
import { BlockMap, isAllocated, sectorRuns } from './block-map.js';
import { encodeVdiHeader, uuidText, type VdiHeader, virtualSize } from './header.js';
import * as L from './limits.js';

/** What opening found: the parts of an open vdi node. */
export interface OpenedVdi {
  nodeName: string;
  file: BlockNode;
  h: VdiHeader;
  map: BlockMap;
  /** The data block index the next allocation takes. */
  nextIndex: number;
  writable: boolean;
}

/**
 * The operations of an open vdi node. Reads and writes of allocated blocks go straight to the
 * file. A write to an unallocated block takes the next data block at the end of the data area
 * (zero-filled around what is written); once that data is written the block is in the map in
 * memory, so reads and writes find it, but its entry reaches the file only at the next flush
 * (or close): the file is flushed first, then the header and the changed map sectors are
 * written, then the file is flushed again. A map entry on disk therefore never points at data
 * that is not on disk (a crash loses only allocations not yet flushed, which then read as
 * before: zeros), and a convert of many blocks pays two flushes in all, not one per block.
 * QEMU's vdi.c writes the entry right after the data with no flush between: cheaper still, but
 * after a crash an entry may point at a data block that never reached the disk. Other writes to
 * a block being allocated wait for it, so a block is never allocated twice.
 */
export function vdiInstance(o: OpenedVdi): DriverInstance {
  const { file, h, map, nodeName } = o;
  const bs = h.blockSize;
  const size = virtualSize(h);
  const staticImage = h.imageType === L.TYPE_STATIC;
  let next = o.nextIndex;
  /** Highest data block index in the map in memory, plus one (what the header counts). */
  let counted = h.blocksAllocated;
  /** The map as the file holds it: only entries whose data was flushed before are written into it. */
  const onDisk = new BlockMap(map.bytes.slice(), map.blocks);
  /** Allocations in memory only: guest block → data block index, in the order they were made. */
  let unrecorded = new Map<number, number>();
  /** Guest blocks being allocated: settles when the data is written (or the write failed). */
  const allocating = new Map<number, Promise<void>>();
  const metadataLock = new AsyncLock();

  const host = (entry: number, inBlock: number) => h.offsetData + entry * bs + inBlock;

  /** Reads [offset, offset + buffer.length) of the guest; blocks that lie one after another in the file are read as one request. */
  const read = async (offset: number, buffer: Uint8Array): Promise<void> => {
    for (let pos = 0; pos < buffer.length; ) {
      const at = offset + pos;
      const b = Math.floor(at / bs);
      const inBlock = at - b * bs;
      const e = map.get(b);
      let n = Math.min(bs - inBlock, buffer.length - pos);
      // The following blocks join while they are of the same kind (and, with data, the next in the file).
      for (let k = b + 1; pos + n < buffer.length; k++) {
        const ek = map.get(k);
        if (isAllocated(e) ? ek !== e + (k - b) : isAllocated(ek)) break;
        n = Math.min(n + bs, buffer.length - pos);
      }
      const part = buffer.subarray(pos, pos + n);
      if (isAllocated(e)) await file.read(host(e, inBlock), part);
      else part.fill(0);
      pos += n;
    }
  };

  /** The common read, within one block: one file read or zeros settled at once, no async frame or sub-array; longer ones take {@link read}. */
  const readFast = (offset: number, buffer: Uint8Array): Promise<void> => {
    const b = Math.floor(offset / bs);
    const inBlock = offset - b * bs;
    if (inBlock + buffer.length > bs) return read(offset, buffer);
    const e = map.get(b);
    if (isAllocated(e)) return file.read(host(e, inBlock), buffer);
    buffer.fill(0);
    return SETTLED;
  };

  /**
   * Writes the allocations made so far into the file's map: their data flushed first, then the
   * header and the map sectors that hold them, then a flush that makes the entries durable.
   * When it fails the allocations stay unrecorded for the next flush (memory still has them).
   */
  const flush = async (): Promise<void> => {
    await metadataLock.acquire();
    try {
      if (unrecorded.size === 0) return await file.flush();
      const batch = unrecorded;
      unrecorded = new Map();
      try {
        await file.flush();
        let top = 0;
        const sectors = new Set<number>();
        for (const [b, index] of batch) {
          onDisk.set(b, index);
          if (index + 1 > top) top = index + 1;
          sectors.add(onDisk.sectorOf(b).at);
        }
        const recorded = Math.max(top, onDiskCount);
        await file.write(0, encodeVdiHeader({ ...h, blocksAllocated: recorded }));
        // Changed sectors that follow each other go as one write (a convert changes them all: one write, not one per sector).
        for (const [from, to] of sectorRuns(sectors)) await file.write(h.offsetBmap + from, onDisk.bytes.subarray(from, to));
        await file.flush();
        onDiskCount = recorded;
      } catch (error) {
        // Written again whole by the next flush (the sectors hold only flushed blocks' entries).
        for (const [b, index] of batch) if (!unrecorded.has(b)) unrecorded.set(b, index);
        throw error;
      }
    } finally {
      metadataLock.release();
    }
  };
  /** blocks_allocated as the file's header has it. */
  let onDiskCount = h.blocksAllocated;

  /** Takes the next data block for guest block `b` and writes `part` at `inBlock` into it (the rest zeros); in the map in memory once written. */
  const allocate = async (b: number, inBlock: number, part: Uint8Array): Promise<void> => {
    if (next >= h.blocksInImage) {
      throw new BlockError('ECORRUPT', `vdi: no free data block for guest block ${b}: ${next} of ${h.blocksInImage} are taken`, { node: nodeName, field: 'blocks_allocated' });
    }
    let release!: () => void;
    allocating.set(b, new Promise<void>((resolve) => (release = resolve)));
    const index = next++;
    let whole = part;
    if (part.length !== bs) {
      whole = new Uint8Array(bs);
      whole.set(part, inBlock);
    }
    try {
      await file.write(host(index, 0), whole, true);
      // The data block is lost if its write failed (as QEMU loses it): the block reads as before.
      map.set(b, index);
      unrecorded.set(b, index);
      if (index + 1 > counted) counted = index + 1;
    } finally {
      allocating.delete(b);
      release();
    }
  };

  /** Writes one piece within block `b`: into its data block, waiting for an allocation in progress, or allocating it. */
  const writeInBlock = async (b: number, inBlock: number, part: Uint8Array): Promise<void> => {
    for (;;) {
      const e = map.get(b);
      if (isAllocated(e)) return file.write(host(e, inBlock), part);
      const pending = allocating.get(b);
      if (!pending) return allocate(b, inBlock, part);
      await pending;
    }
  };

  /** Blocks that lie one after another in the file are written as one request; an unallocated block is allocated on its own. */
  const write = async (offset: number, data: Uint8Array): Promise<void> => {
    for (let pos = 0; pos < data.length; ) {
      const at = offset + pos;
      const b = Math.floor(at / bs);
      const inBlock = at - b * bs;
      const e = map.get(b);
      let n = Math.min(bs - inBlock, data.length - pos);
      if (isAllocated(e)) {
        for (let k = b + 1; pos + n < data.length && map.get(k) === e + (k - b); k++) n = Math.min(n + bs, data.length - pos);
      }
      await writeInBlock(b, inBlock, data.subarray(pos, pos + n));
      pos += n;
    }
  };

  // Unallocated and zero blocks read as zeros already: only allocated ones are zeroed (in place,
  // as VDI cannot give a data block back).
  const writeZeroes = async (offset: number, length: number): Promise<void> => {
    for (let pos = 0; pos < length; ) {
      const at = offset + pos;
      const b = Math.floor(at / bs);
      const inBlock = at - b * bs;
      const n = Math.min(bs - inBlock, length - pos);
      const pending = allocating.get(b);
      if (pending) await pending;
      const e = map.get(b);
      if (isAllocated(e)) await file.writeZeroes(host(e, inBlock), n);
      pos += n;
    }
  };

  const readOnlyError = () => Promise.reject(new BlockError('EROFS', 'vdi: the node is read-only', { node: nodeName }));

  const blockStatus = async (offset: number, length: number): Promise<BlockStatus> => {
    const end = offset + length;
    const b0 = Math.floor(offset / bs);
    const e0 = map.get(b0);
    // The run of blocks that share the first one's kind (and, with data, lie one after another).
    let b = b0 + 1;
    for (; b * bs < end; b++) {
      const e = map.get(b);
      if (isAllocated(e0) ? e !== e0 + (b - b0) : isAllocated(e)) break;
    }
    const runLength = Math.min(end, b * bs) - offset;
    if (!isAllocated(e0)) return { offset, length: runLength, data: false, zero: true, allocated: true, depth: 0 };
    const at = host(e0, offset - b0 * bs);
    if (!staticImage) return { offset, length: runLength, data: true, zero: false, allocated: true, depth: 0, hostOffset: at, hostNode: file.name };
    // A static image's blocks are holes of the file until written: ask the file, as QEMU does.
    const f = await file.blockStatus(at, runLength);
    return { offset, length: f.length, data: true, zero: f.zero, allocated: true, depth: 0, hostOffset: at, hostNode: file.name };
  };

  return {
    alignment: 1,
    length: () => size,
    read: readFast,
    write: o.writable ? write : readOnlyError,
    writeZeroes: o.writable ? writeZeroes : readOnlyError,
    // VDI has no way to give a block back (QEMU's vdi has no discard): a hint that does nothing.
    discard: o.writable ? async () => {} : readOnlyError,
    flush: o.writable ? flush : async () => {},
    blockStatus,
    async close() {
      if (o.writable) await flush();
    },
    info: () => ({
      format: 'vdi',
      virtualSize: size,
      clusterSize: bs,
      imageType: staticImage ? 'static' : 'dynamic',
      blocksInImage: h.blocksInImage,
      blocksAllocated: counted,
      uuid: uuidText(h.uuidImage),
      lastSnapshotUuid: uuidText(h.uuidLastSnap),
      description: h.description,
    }),
  };
}
