// An OPFS file through a FileSystemSyncAccessHandle (the fast path, dedicated Workers only):
// every call completes before it returns, so a request is one synchronous call.
import { BlockError } from '../../errors.js';
import { type DriverInstance, SETTLED } from '../../node/driver.js';
import { allData, type OpfsFileFacts, preallocMode } from './common.js';
import { fromDomError } from './dom-errors.js';
import type { SyncAccessHandle } from './web-types.js';

/** What every request that succeeded returns: the work is done before the call returns, no promise per request is needed (a Drive completes it at once). */
const DONE = SETTLED;

/** Zeros are written in pieces of at most this many bytes (one buffer, made on first use). */
const ZERO_PIECE = 1 << 20;

/** A sync instance; `rebind` puts it onto the handle (and lock) `handoff` gives up: a failed reopen closed its own. */
export type SyncFileInstance = DriverInstance & {
  rebind(handle: SyncAccessHandle, facts: OpfsFileFacts): void;
  handoff(): [SyncAccessHandle, OpfsFileFacts];
};

export function syncFileInstance(first: SyncAccessHandle, firstFacts: OpfsFileFacts): SyncFileInstance {
  let handle = first;
  let facts = firstFacts;
  const { path, node } = facts;
  let size = handle.getSize();
  let unflushed = false;
  let zeros: Uint8Array | undefined;
  // one options object for every call: the handle reads `at` during the call only
  const at = { at: 0 };
  const writeAll = (offset: number, data: Uint8Array) => {
    at.at = offset;
    let done: number;
    try {
      done = handle.write(data, at);
    } catch (e) {
      throw fromDomError(e, `opfs: write of ${data.length} bytes at ${offset} to '${path}' failed`, { node, path, offset, length: data.length });
    }
    if (done !== data.length) {
      // Chromium writes all or throws; a short count means the storage refused the rest
      throw new BlockError('ENOSPC', `opfs: only ${done} of ${data.length} bytes written at ${offset} to '${path}'`, { node, path, offset, length: data.length });
    }
    if (offset + done > size) size = offset + done;
  };
  const zeroFill = (offset: number, length: number) => {
    zeros ??= new Uint8Array(Math.min(ZERO_PIECE, length));
    for (let pos = 0; pos < length; pos += zeros.length) {
      const n = Math.min(zeros.length, length - pos);
      writeAll(offset + pos, n === zeros.length ? zeros : zeros.subarray(0, n));
    }
  };
  const resize = (newSize: number) => {
    try {
      handle.truncate(newSize);
    } catch (e) {
      throw fromDomError(e, `opfs: resizing '${path}' to ${newSize} bytes failed`, { node, path, field: 'size' });
    }
    size = newSize;
  };
  return {
    alignment: 1,
    growable: true,
    length: () => size,
    read(offset, buffer) {
      at.at = offset;
      let n: number;
      try {
        n = handle.read(buffer, at);
      } catch (e) {
        return Promise.reject(fromDomError(e, `opfs: read of ${buffer.length} bytes at ${offset} from '${path}' failed`, { node, path, offset, length: buffer.length }));
      }
      // past the end of the file (shrunk by someone else): zeros, as beyond EOF in QEMU
      if (n < buffer.length) buffer.fill(0, n);
      return DONE;
    },
    write(offset, data) {
      unflushed = true;
      try {
        writeAll(offset, data);
      } catch (e) {
        return Promise.reject(e);
      }
      return DONE;
    },
    async flush() {
      unflushed = false;
      try {
        handle.flush();
      } catch (e) {
        throw fromDomError(e, `opfs: flush of '${path}' failed`, { node, path });
      }
    },
    // advisory, and OPFS cannot punch holes: nothing to do
    async discard() {},
    async writeZeroes(offset, length) {
      unflushed = true;
      const end = offset + length;
      if (end >= size) {
        // cut and grow back: the new part reads as zeros and takes no space
        const keep = size;
        resize(offset);
        resize(Math.max(keep, end));
        return;
      }
      zeroFill(offset, length);
    },
    blockStatus: allData,
    async truncate(newSize, options) {
      const prealloc = preallocMode(options.prealloc, node, path);
      const old = size;
      unflushed = true;
      resize(newSize);
      if (prealloc === 'full' && newSize > old) zeroFill(old, newSize - old);
    },
    async close() {
      try {
        // what was written reaches the storage before the handle goes (QEMU flushes on close and ignores a failure there)
        if (facts.writable && unflushed) handle.flush();
      } catch {
        // the close itself must not fail
      }
      try {
        handle.close();
      } finally {
        await facts.release();
      }
    },
    info: () => ({ ...facts.info, mode: 'sync' }),
    rebind(h, f) {
      handle = h;
      facts = f;
      size = h.getSize();
      unflushed = false;
    },
    handoff: () => [handle, facts],
  };
}
