// An OPFS file through the asynchronous API (the main thread has no sync access handle): reads
// come from a File snapshot, writes wait in memory and are committed together through a
// writable stream, which Chromium lays into a swap copy of the file and puts in place at close.
// A commit therefore costs the whole file: it happens at flush, at close, before a resize, and
// when the waiting writes pass a bound.
import type { DriverInstance } from '../../node/driver.js';
import { allData, type OpfsFileFacts, preallocMode } from './common.js';
import { fromDomError } from './dom-errors.js';
import type { FileHandle, FileSnapshot } from './web-types.js';

/** Bytes, and writes, waiting before a commit is forced: they bound the memory and each read's overlay work. */
export const MAX_PENDING_BYTES = 16 << 20;
export const MAX_PENDING_WRITES = 4096;
const ZERO_PIECE = 1 << 20;

interface Pending {
  readonly offset: number;
  readonly data: Uint8Array;
}

/** An async instance; `rebind` puts it onto the lock (and mode) `handoff` gives up: a failed reopen released its own. */
export type AsyncFileInstance = DriverInstance & {
  rebind(facts: OpfsFileFacts): void;
  handoff(): OpfsFileFacts;
};

export async function asyncFileInstance(handle: FileHandle, firstFacts: OpfsFileFacts): Promise<AsyncFileInstance> {
  let facts = firstFacts;
  const { path, node } = facts;
  const snapshot = async (): Promise<FileSnapshot> => {
    try {
      return await handle.getFile();
    } catch (e) {
      throw fromDomError(e, `opfs: could not read '${path}'`, { node, path });
    }
  };
  let file = await snapshot();
  let size = file.size;
  // writes not yet in the file, oldest first; `committing` those a commit is laying down now
  let pending: Pending[] = [];
  let pendingBytes = 0;
  let committing: Pending[] = [];
  let resizeTo: number | undefined;
  let commitChain: Promise<void> = Promise.resolve();
  let zeros: Uint8Array | undefined;

  const commitNow = async () => {
    if (pending.length === 0 && resizeTo === undefined) return;
    committing = pending;
    pending = [];
    pendingBytes = 0;
    const newSize = resizeTo;
    resizeTo = undefined;
    let w: Awaited<ReturnType<FileHandle['createWritable']>> | undefined;
    try {
      w = await handle.createWritable({ keepExistingData: true });
      if (newSize !== undefined) await w.write({ type: 'truncate', size: newSize });
      for (const p of committing) await w.write({ type: 'write', position: p.offset, data: p.data });
      await w.close();
      file = await handle.getFile();
      committing = [];
    } catch (e) {
      await w?.abort().catch(() => undefined);
      // nothing is lost: the writes wait again, ahead of newer ones, for the next commit
      pending = committing.concat(pending);
      pendingBytes = pending.reduce((n, p) => n + p.data.length, 0);
      committing = [];
      if (newSize !== undefined && resizeTo === undefined) resizeTo = newSize;
      throw fromDomError(e, `opfs: writing to '${path}' failed`, { node, path });
    }
  };
  const commit = () => {
    const next = commitChain.then(commitNow);
    commitChain = next.catch(() => undefined);
    return next;
  };
  const overlay = (list: readonly Pending[], offset: number, buffer: Uint8Array) => {
    const end = offset + buffer.length;
    for (const p of list) {
      const pEnd = p.offset + p.data.length;
      if (pEnd <= offset || p.offset >= end) continue;
      const from = Math.max(offset, p.offset);
      const to = Math.min(end, pEnd);
      buffer.set(p.data.subarray(from - p.offset, to - p.offset), from - offset);
    }
  };
  const queue = async (offset: number, data: Uint8Array) => {
    pending.push({ offset, data });
    pendingBytes += data.length;
    if (offset + data.length > size) size = offset + data.length;
    if (pendingBytes > MAX_PENDING_BYTES || pending.length > MAX_PENDING_WRITES) await commit();
  };

  return {
    alignment: 1,
    growable: true,
    length: () => size,
    async read(offset, buffer) {
      const f = file;
      const before = committing;
      const after = pending;
      const end = Math.min(offset + buffer.length, f.size);
      let n = 0;
      if (end > offset) {
        let bytes: ArrayBuffer;
        try {
          bytes = await f.slice(offset, end).arrayBuffer();
        } catch (e) {
          throw fromDomError(e, `opfs: read of ${buffer.length} bytes at ${offset} from '${path}' failed`, { node, path, offset, length: buffer.length });
        }
        buffer.set(new Uint8Array(bytes));
        n = bytes.byteLength;
      }
      if (n < buffer.length) buffer.fill(0, n);
      overlay(before, offset, buffer);
      overlay(after, offset, buffer);
    },
    write(offset, data) {
      // the caller may reuse its buffer once this settles: keep a copy
      return queue(offset, data.slice());
    },
    flush: commit,
    async discard() {},
    async writeZeroes(offset, length) {
      zeros ??= new Uint8Array(ZERO_PIECE);
      // the zero buffer is never written to, so every piece may share it
      for (let pos = 0; pos < length; pos += ZERO_PIECE) await queue(offset + pos, zeros.subarray(0, Math.min(ZERO_PIECE, length - pos)));
    },
    blockStatus: allData,
    async truncate(newSize, options) {
      const prealloc = preallocMode(options.prealloc, node, path);
      // the writes before the resize land first, then the file is cut or grown in one commit
      await commit();
      const old = size;
      resizeTo = newSize;
      size = newSize;
      await commit();
      if (prealloc === 'full' && newSize > old) {
        for (let pos = old; pos < newSize; pos += ZERO_PIECE) {
          zeros ??= new Uint8Array(ZERO_PIECE);
          await queue(pos, zeros.subarray(0, Math.min(ZERO_PIECE, newSize - pos)));
        }
        await commit();
      }
    },
    async close() {
      try {
        if (facts.writable) await commit();
      } catch {
        // QEMU ignores a failed flush at close; the close itself must not fail
      } finally {
        await facts.release();
      }
    },
    info: () => ({ ...facts.info, mode: 'async', pendingBytes }),
    rebind(f) {
      facts = f;
    },
    handoff: () => facts,
  };
}
