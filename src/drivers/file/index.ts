import fs from 'node:fs';
import * as z from 'zod';
import { BlockError, fromErrno } from '../../errors.js';
import { type BlockStatus, defineDriver, type DriverInstance } from '../../node/driver.js';
import { AIO_ENGINES, defaultAio, type IoEngine, selectEngine } from './engine.js';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, tryFallocate } from './fallocate.js';
import { truncateFile } from './truncate.js';
import { AdjacentMerger } from './merge.js';
import { seek } from './posix.js';
import { FORCE_SHARE_PERMISSIONS, type ImagePermissions, imagePermissions, lockImage, moveLocks } from './qemu-lock.js';

const schema = z
  .object({
    /** Path of the image file or block device. */
    filename: z
      .string({ error: 'required' })
      .min(1, 'must not be empty')
      .refine((f) => !f.includes('\0'), 'must not contain a NUL byte'),
    /**
     * Image locking (QEMU `locking`): QEMU's own lock bytes, so QEMU and we refuse each other's
     * conflicting opens: a writer shares writing with nobody, readers coexist. `auto` goes on
     * unlocked where the file system has no locks, `on` fails there, `off` takes none.
     */
    locking: z.enum(['on', 'off', 'auto']).default('auto'),
    /**
     * QEMU `force-share` (qemu-img -U): take only the read lock and share everything, so a file
     * another process holds read-write (QEMU, qemu-nbd, `blocklayer serve`) can be read. Requires
     * a read-only node. A qcow2 image over such a file opens its backing chain and data file so too.
     */
    forceShare: z.boolean().default(false),
    /**
     * I/O engine (QEMU `aio`): `threads` (Node's thread pool) or `io_uring`. Default: the
     * BLOCKLAYER_FILE_AIO environment variable, else `threads`. Where io_uring is unavailable
     * (old kernel, sysctl kernel.io_uring_disabled, a container's seccomp profile, no koffi)
     * `io_uring` falls back to threads with one process warning (BLOCKLAYER_AIO_FALLBACK) and
     * info().aio says `threads`. QEMU refuses to open the image instead; a library that must
     * run in containers it does not control keeps working and says so. Discard and
     * write-zeroes (fallocate) stay on the thread pool with either engine.
     */
    aio: z.enum(AIO_ENGINES).optional(),
  })
  .strict();

/** A file or block device on the host (QEMU file-posix): positional I/O on one fd. */
export const fileDriver = defineDriver({
  name: 'file',
  capabilities: { kind: 'protocol' },
  schema,
  async open({ options, readOnly, nodeName, parent }): Promise<DriverInstance> {
    const { filename, locking, forceShare } = options;
    if (forceShare && !readOnly) {
      throw new BlockError('EINVAL', `forceShare: force-share=on can only be used with read-only images ('${filename}')`, { node: nodeName, field: 'forceShare' });
    }
    const engine = selectEngine(options.aio ?? defaultAio());
    const ctx = { node: nodeName, path: filename, field: 'filename' };
    const how = readOnly ? '' : ' read-write';
    // Look before opening: open(2) on a FIFO without a writer blocks, holding a libuv worker.
    let stats: fs.Stats;
    try {
      stats = await statPath(filename);
    } catch (e) {
      throw fromErrno(e, `could not open '${filename}'${how}`, ctx);
    }
    refuseKind(stats, filename, ctx);
    // O_NONBLOCK closes the race with a FIFO swapped in after the stat: its open cannot block
    // then, and the fstat below refuses it. Regular files and block devices ignore the flag for
    // I/O (reads and writes go through the page cache and wait as usual), so it stays set.
    const fd = await openFd(filename, readOnly, how, ctx);
    const closeFd = () => new Promise<void>((resolve) => fs.close(fd, () => resolve()));
    const keepsMetadata = parent?.capabilities.keepsMetadata === true;
    try {
      const opened = await fstat(fd);
      refuseKind(opened, filename, ctx);
      const perms = forceShare ? FORCE_SHARE_PERMISSIONS : imagePermissions(!readOnly, keepsMetadata);
      if (locking !== 'off') await lockImage(fd, filename, perms, locking, { node: nodeName, field: 'filename' });
      // A regular file's size is fstat's (no native lseek loaded just for it); SEEK_END gives a block device's, where fstat says 0.
      const size = opened.isFile() ? opened.size : await seek(fd, 0, 'end');
      if (!Number.isSafeInteger(size) || size < 0) {
        throw new BlockError('EFBIG', `'${filename}' has a size of ${size} bytes, beyond 2^53`, ctx);
      }
      const reopen: ReopenFacts = { nodeName, locking, forceShare, keepsMetadata, perms, stats: opened };
      return fileInstance(engine, fd, size, filename, closeFd, !readOnly, opened.isFile(), reopen);
    } catch (e) {
      await closeFd();
      throw e instanceof BlockError ? e : fromErrno(e, `could not open '${filename}'${how}`, ctx);
    }
  },
});

/** Opens `filename` read-only or read-write; O_NONBLOCK: see open() above. */
async function openFd(filename: string, readOnly: boolean, how: string, ctx: { node: string; path: string; field: string }): Promise<number> {
  const flags = (readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR) | (fs.constants.O_NONBLOCK ?? 0);
  try {
    return await new Promise<number>((resolve, reject) => fs.open(filename, flags, (err, f) => (err ? reject(err) : resolve(f))));
  } catch (e) {
    throw fromErrno(e, `could not open '${filename}'${how}`, ctx);
  }
}

// callbacks, not fs.promises: node:fs/promises loads readline and the watchers, which a start need not pay for
const statPath = (filename: string) => new Promise<fs.Stats>((resolve, reject) => fs.stat(filename, (err, st) => (err ? reject(err) : resolve(st))));
const fstat = (fd: number) => new Promise<fs.Stats>((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));

/** What a reopen of the node needs to know of its open. */
interface ReopenFacts {
  readonly nodeName: string;
  readonly locking: 'on' | 'off' | 'auto';
  readonly forceShare: boolean;
  readonly keepsMetadata: boolean;
  /** The permissions the open's locks stand for. */
  readonly perms: ImagePermissions;
  /** The file as opened (a reopen must find the same one). */
  readonly stats: fs.Stats;
}

/**
 * The node read-only or read-write on a new descriptor of the same file (QEMU raw_reopen_prepare:
 * a mode change needs a new open); the locks move to it with the new permissions. The old
 * descriptor's writes are made durable and it is closed.
 */
async function reopenFile(io: IoEngine, facts: ReopenFacts, oldFd: number, filename: string, size: number, readOnly: boolean, finish: () => Promise<void>): Promise<DriverInstance> {
  const ctx = { node: facts.nodeName, path: filename, field: 'filename' };
  if (facts.forceShare && !readOnly) {
    throw new BlockError('EINVAL', `forceShare: force-share=on can only be used with read-only images ('${filename}')`, { node: facts.nodeName, field: 'forceShare' });
  }
  const fd = await openFd(filename, readOnly, readOnly ? '' : ' read-write', ctx);
  const closeFd = () => new Promise<void>((resolve) => fs.close(fd, () => resolve()));
  try {
    const st = await fstat(fd);
    if (st.dev !== facts.stats.dev || st.ino !== facts.stats.ino) throw new BlockError('ESTALE', `'${filename}' was replaced since it was opened: cannot reopen it`, ctx);
    const perms = facts.forceShare ? FORCE_SHARE_PERMISSIONS : imagePermissions(!readOnly, facts.keepsMetadata);
    if (facts.locking !== 'off') await moveLocks(oldFd, fd, filename, facts.perms, perms, facts.locking, { node: facts.nodeName, field: 'filename' });
    await finish();
    return fileInstance(io, fd, size, filename, closeFd, !readOnly, st.isFile(), { ...facts, perms, stats: st });
  } catch (e) {
    await closeFd();
    throw e instanceof BlockError ? e : fromErrno(e, `could not reopen '${filename}'`, ctx);
  }
}

/** Refuses what the file driver cannot serve: only regular files and block devices are disks. */
function refuseKind(stats: fs.Stats, filename: string, ctx: { node: string; path: string; field: string }): void {
  if (stats.isFile() || stats.isBlockDevice()) return;
  if (stats.isDirectory()) {
    throw new BlockError('EISDIR', `'${filename}' is a directory; the 'file' driver needs a regular file or a block device`, ctx);
  }
  const kind = stats.isFIFO()
    ? 'a FIFO'
    : stats.isSocket()
      ? 'a socket'
      : stats.isCharacterDevice()
        ? 'a character device'
        : 'neither a file nor a device';
  throw new BlockError('EINVAL', `'${filename}' is ${kind}; the 'file' driver needs a regular file or a block device`, ctx);
}

function fileInstance(io: IoEngine, fd: number, size: number, filename: string, closeFd: () => Promise<void>, writable: boolean, regular: boolean, facts: ReopenFacts): DriverInstance {
  /** Written since the last flush: a close then flushes first, as QEMU's bdrv_close does. */
  let unflushed = false;
  const fdatasync = () => new Promise<void>((resolve, reject) => io.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
  const readAt = (offset: number, buffer: Uint8Array, done: number, resolve: () => void, reject: (e: unknown) => void) => {
    io.read(fd, buffer, done, buffer.length - done, offset + done, (err, n) => {
      if (err) return reject(err);
      const total = done + n;
      if (total === buffer.length) return resolve();
      // The file ended early (it shrank under us): the rest reads as zeros, as beyond EOF in QEMU.
      if (n === 0) {
        buffer.fill(0, total);
        return resolve();
      }
      readAt(offset, buffer, total, resolve, reject);
    });
  };
  const writeAt = (offset: number, data: Uint8Array, done: number, resolve: () => void, reject: (e: unknown) => void) => {
    io.write(fd, data, done, data.length - done, offset + done, (err, n) => {
      if (err) return reject(err);
      const total = done + n;
      if (total === data.length) {
        // A write past the end (only a growing write gets there) made the file longer.
        if (offset + total > size) size = offset + total;
        return resolve();
      }
      writeAt(offset, data, total, resolve, reject);
    });
  };
  // Adjacent requests of one turn go as one vectored call where the engine saves trips by it (threads).
  const grow = (end: number) => {
    if (end > size) size = end;
  };
  const reads = io.readv ? new AdjacentMerger(fd, io.readv, readAt) : null;
  const writes = io.writev ? new AdjacentMerger(fd, io.writev, writeAt, grow) : null;
  const zeroFill = async (offset: number, length: number) => {
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let pos = 0; pos < length; pos += chunk.length) {
      const n = Math.min(chunk.length, length - pos);
      await new Promise<void>((resolve, reject) => writeAt(offset + pos, chunk.subarray(0, n), 0, resolve, reject));
    }
  };
  return {
    alignment: 1,
    growable: true,
    length: () => size,
    read(offset, buffer) {
      if (reads) return new Promise((resolve, reject) => reads.add(offset, buffer, resolve, reject));
      return new Promise((resolve, reject) => readAt(offset, buffer, 0, resolve, reject));
    },
    write(offset, data) {
      unflushed = true;
      if (writes) return new Promise((resolve, reject) => writes.add(offset, data, resolve, reject));
      return new Promise((resolve, reject) => writeAt(offset, data, 0, resolve, reject));
    },
    flush() {
      // Writes still waiting for their turn's merge go first: a flush follows the writes issued before it.
      writes?.flush();
      unflushed = false;
      return fdatasync();
    },
    async discard(offset, length) {
      unflushed = true;
      // Advisory: a file system without hole punching keeps the data, as QEMU allows.
      await tryFallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
    },
    async writeZeroes(offset, length) {
      unflushed = true;
      if (await tryFallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)) return;
      if (await tryFallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)) return;
      await zeroFill(offset, length);
    },
    async blockStatus(offset, length): Promise<BlockStatus> {
      const end = offset + length;
      let dataAt: number;
      try {
        dataAt = await seek(fd, offset, 'data');
      } catch (e) {
        const errno = (e as NodeJS.ErrnoException).code;
        // ENXIO: no data after offset, the rest is a hole.
        if (errno === 'ENXIO') return hole(offset, length);
        // No SEEK_DATA support (or no way to call it, see posix.ts): everything counts as data.
        return { offset, length, data: true, zero: false, allocated: true, depth: 0, hostOffset: offset };
      }
      if (dataAt > offset) return hole(offset, Math.min(dataAt, end) - offset);
      let holeAt: number;
      try {
        holeAt = await seek(fd, offset, 'hole');
      } catch {
        holeAt = end;
      }
      return { offset, length: Math.min(holeAt, end) - offset, data: true, zero: false, allocated: true, depth: 0, hostOffset: offset };
    },
    async truncate(newSize, options) {
      writes?.flush();
      size = await truncateFile(fd, filename, size, newSize, regular, options.prealloc ?? 'off', zeroFill);
    },
    reopen(readOnly) {
      // Writes waiting for their turn's merge go out, and everything written is durable, before the old descriptor closes.
      const finish = async () => {
        writes?.flush();
        if (writable && unflushed) await fdatasync();
        await closeFd();
      };
      return reopenFile(io, facts, fd, filename, size, readOnly, finish);
    },
    async close() {
      // What was written reaches the disk before the descriptor goes (QEMU flushes on close and
      // ignores a failure there: the close itself must not fail).
      if (writable && unflushed) await fdatasync().catch(() => undefined);
      await closeFd();
    },
    info: () => ({ filename, aio: io.name }),
    allocatedSize: async () => (await fstat(fd)).blocks * 512,
  };
}

function hole(offset: number, length: number): BlockStatus {
  return { offset, length, data: false, zero: true, allocated: true, depth: 0, hostOffset: offset };
}
