import { BlockError } from '../../errors.js';
import type { BlockStatus, DriverInstance } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { AsyncLock } from '../qcow2/async-lock.js';
import { type BlockMap, isAllocated } from './block-map.js';
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

/** A block whose data is on disk, waiting for its map entry. */
interface Ready {
  block: number;
  index: number;
  /** The entry before (unallocated or zero), restored if the commit fails. */
  before: number;
  /** Set once a commit has taken it: whether it was recorded, or why not. */
  outcome?: { error: unknown } | 'recorded';
  /** Lets the writes waiting for this block go on (recorded or not). */
  settle: () => void;
}

/**
 * The operations of an open vdi node. Reads and writes of allocated blocks go straight to the
 * file. A write to an unallocated block takes the next data block at the end of the data area
 * (zero-filled around what is written), and once that data is written, flushes the file and
 * only then records the block in the header and the map: a crash never leaves an entry pointing
 * at unwritten data. Other writes to a block being allocated wait for it, so a block is never
 * allocated twice. A request records the blocks it allocated when its data is all written, and
 * allocations that finish together share one flush and one map update. Requests take blocks in
 * ascending order, so waiting for another request's block never closes a circle.
 */
export function vdiInstance(o: OpenedVdi): DriverInstance {
  const { file, h, map, nodeName } = o;
  const bs = h.blockSize;
  const size = virtualSize(h);
  const staticImage = h.imageType === L.TYPE_STATIC;
  let next = o.nextIndex;
  /** Highest data block index recorded in the map, plus one (what the header counts). */
  let counted = h.blocksAllocated;
  /** Guest blocks being allocated: settles when the allocation is recorded or has failed. */
  const allocating = new Map<number, Promise<void>>();
  const ready: Ready[] = [];
  const metadataLock = new AsyncLock();

  const host = (entry: number, inBlock: number) => h.offsetData + entry * bs + inBlock;

  const read = async (offset: number, buffer: Uint8Array): Promise<void> => {
    for (let pos = 0; pos < buffer.length; ) {
      const at = offset + pos;
      const b = Math.floor(at / bs);
      const inBlock = at - b * bs;
      const n = Math.min(bs - inBlock, buffer.length - pos);
      const part = buffer.subarray(pos, pos + n);
      const e = map.get(b);
      if (isAllocated(e)) await file.read(host(e, inBlock), part);
      else part.fill(0);
      pos += n;
    }
  };

  /**
   * Records `mine` with every other block in `ready`: one flush of their data, then the header
   * and the map sectors. Settles when `mine` are recorded (perhaps by a commit that took them earlier).
   */
  const commit = async (mine: Ready[]): Promise<void> => {
    await metadataLock.acquire();
    const batch = ready.splice(0);
    try {
      if (batch.length > 0) await record(batch);
    } finally {
      metadataLock.release();
    }
    for (const r of mine) if (r.outcome !== 'recorded') throw r.outcome?.error ?? new BlockError('EIO', 'vdi: allocation was not recorded', { node: nodeName });
  };

  const record = async (batch: Ready[]): Promise<void> => {
    try {
      await file.flush();
      for (const r of batch) {
        map.set(r.block, r.index);
        if (r.index + 1 > counted) counted = r.index + 1;
      }
      await file.write(0, encodeVdiHeader({ ...h, blocksAllocated: counted }));
      const sectors = new Set(batch.map((r) => map.sectorOf(r.block).at));
      for (const at of [...sectors].sort((x, y) => x - y)) await file.write(h.offsetBmap + at, map.bytes.subarray(at, at + L.SECTOR_SIZE));
      for (const r of batch) r.outcome = 'recorded';
    } catch (error) {
      // Not recorded: the blocks read as before (their data blocks are lost, as QEMU loses them).
      for (const r of batch) {
        map.set(r.block, r.before);
        r.outcome = { error };
      }
    } finally {
      for (const r of batch) r.settle();
    }
  };

  /** Takes the next data block for guest block `b` and writes `part` at `inBlock` into it (the rest zeros); recorded later. */
  const allocate = async (b: number, inBlock: number, part: Uint8Array): Promise<Ready> => {
    if (next >= h.blocksInImage) {
      throw new BlockError('ECORRUPT', `vdi: no free data block for guest block ${b}: ${next} of ${h.blocksInImage} are taken`, { node: nodeName, field: 'blocks_allocated' });
    }
    let release!: () => void;
    allocating.set(b, new Promise<void>((resolve) => (release = resolve)));
    const r: Ready = {
      block: b,
      index: next++,
      before: map.get(b),
      settle: () => {
        allocating.delete(b);
        release();
      },
    };
    let whole = part;
    if (part.length !== bs) {
      whole = new Uint8Array(bs);
      whole.set(part, inBlock);
    }
    try {
      await file.write(host(r.index, 0), whole, true);
    } catch (e) {
      r.settle();
      throw e;
    }
    ready.push(r);
    return r;
  };

  /** Writes one piece within block `b`: into its data block, waiting for an allocation in progress, or allocating it (returned). */
  const writeInBlock = async (b: number, inBlock: number, part: Uint8Array): Promise<Ready | undefined> => {
    for (;;) {
      const e = map.get(b);
      if (isAllocated(e)) {
        await file.write(host(e, inBlock), part);
        return undefined;
      }
      const pending = allocating.get(b);
      if (!pending) return allocate(b, inBlock, part);
      await pending;
    }
  };

  const write = async (offset: number, data: Uint8Array): Promise<void> => {
    let mine: Ready[] | undefined;
    try {
      for (let pos = 0; pos < data.length; ) {
        const at = offset + pos;
        const b = Math.floor(at / bs);
        const inBlock = at - b * bs;
        const n = Math.min(bs - inBlock, data.length - pos);
        const r = await writeInBlock(b, inBlock, data.subarray(pos, pos + n));
        if (r) {
          mine ??= [];
          mine.push(r);
        }
        pos += n;
      }
    } finally {
      // Also after a failure: the blocks already written are recorded, and their waiters go on.
      if (mine) await commit(mine);
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
    read,
    write: o.writable ? write : readOnlyError,
    writeZeroes: o.writable ? writeZeroes : readOnlyError,
    // VDI has no way to give a block back (QEMU's vdi has no discard): a hint that does nothing.
    discard: o.writable ? async () => {} : readOnlyError,
    flush: o.writable ? () => file.flush() : async () => {},
    blockStatus,
    async close() {
      if (o.writable) await file.flush();
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
