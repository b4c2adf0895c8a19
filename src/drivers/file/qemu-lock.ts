import { getSystemErrorName } from 'node:util';
import { BlockError, fromErrno } from '../../errors.js';
import { loadKoffi } from '../../platform/koffi-load.js';
import { describeLockHolders } from './lock-holders.js';
import { flock } from './posix.js';

/**
 * QEMU's image locks (block/file-posix.c), so that QEMU sees us and we see QEMU.
 *
 * Each open of an image holds shared OFD byte-range locks (fcntl F_OFD_SETLK, F_RDLCK): byte
 * 100 + i while it has permission i, byte 200 + i while it does not let others have
 * permission i. An open may go ahead when nobody else locks 200 + i for a permission i it
 * wants, and nobody else locks 100 + i for a permission i it does not share. OFD locks belong
 * to the open file description, so two opens in one process see each other too, and closing
 * the descriptor releases them.
 */

/** Permission bits, QEMU's BLK_PERM_* (the bit number is the lock byte's offset from its base). */
export const Perm = {
  consistentRead: 0x1,
  write: 0x2,
  writeUnchanged: 0x4,
  resize: 0x8,
  all: 0xf,
} as const;

/** QEMU's names of the permissions, as its lock messages spell them (bdrv_perm_names). */
const PERM_NAMES = ['consistent read', 'write', 'write unchanged', 'resize'] as const;

/** First byte of the "holds permission i" locks (RAW_LOCK_PERM_BASE). */
export const LOCK_PERM_BASE = 100;
/** First byte of the "does not share permission i" locks (RAW_LOCK_SHARED_BASE). */
export const LOCK_SHARED_BASE = 200;

/** What one open of an image takes (`perm`) and lets others take (`shared`), as BLK_PERM_* masks. */
export interface ImagePermissions {
  readonly perm: number;
  readonly shared: number;
}

/**
 * The permissions of an image node opened here: it reads; a read-write open writes, and
 * resizes when a format above keeps metadata in it and grows it (qcow2). It shares reading
 * and unchanging writes, never writes or resizing — what QEMU's format nodes take on their
 * file, and what a QEMU guest device takes without share-rw: whoever writes owns the image.
 */
export function imagePermissions(writable: boolean, resizable: boolean): ImagePermissions {
  let perm: number = Perm.consistentRead;
  if (writable) perm |= Perm.write;
  if (writable && resizable) perm |= Perm.resize;
  return { perm, shared: Perm.consistentRead | Perm.writeUnchanged };
}

/**
 * A force-share open (QEMU's force-share=on, qemu-img -U): read-only, it reads and shares
 * everything, so an image another process holds read-write can be inspected (what it reads may
 * be changing under it).
 */
export const FORCE_SHARE_PERMISSIONS: ImagePermissions = { perm: Perm.consistentRead, shared: Perm.all };

/**
 * What qemu-img create takes on an output it replaces: writing and resizing, sharing none of
 * it. Stricter than QEMU (which shares writes and truncates in place): a replaced file is an
 * orphaned inode to whoever still has it open, so any user of the target refuses it.
 */
export const REPLACE_PERMISSIONS: ImagePermissions = { perm: Perm.write | Perm.resize, shared: 0 };

const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
const F_RDLCK = 0;
const F_WRLCK = 1;
const F_UNLCK = 2;
const EAGAIN = 11;
const EACCES = 13;

interface OfdLocks {
  /** Locks (F_RDLCK) or unlocks (F_UNLCK) `length` bytes at `start`; 0 or an errno. */
  set(fd: number, type: number, start: number, length: number): number;
  /** Whether another open file description holds a lock that conflicts with a write lock on `byte`. */
  conflicts(fd: number, byte: number): boolean;
}

let ofd: OfdLocks | null | undefined;

/**
 * fcntl's OFD locks through koffi (Node has no binding); null where they cannot be had: not
 * Linux, a `struct flock` layout other than the 64-bit one, or no koffi.
 */
function loadOfd(): OfdLocks | null {
  if (ofd !== undefined) return ofd;
  ofd = null;
  if (process.platform !== 'linux' || !['x64', 'arm64', 'ppc64', 's390x', 'riscv64', 'loong64'].includes(process.arch)) return ofd;
  try {
    const koffi = loadKoffi();
    const fcntl = koffi.load('libc.so.6').func('int fcntl(int fd, int cmd, ...)');
    // struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start (at 8), off_t l_len (at 16), pid_t l_pid (at 24).
    const arg = Buffer.alloc(32);
    const view = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    const fill = (type: number, start: number, length: number) => {
      arg.fill(0);
      view.setInt16(0, type, little);
      view.setBigInt64(8, BigInt(start), little);
      view.setBigInt64(16, BigInt(length), little);
    };
    ofd = {
      set(fd, type, start, length) {
        fill(type, start, length);
        return fcntl(fd, F_OFD_SETLK, 'void *', arg) === 0 ? 0 : koffi.errno();
      },
      conflicts(fd, byte) {
        fill(F_WRLCK, byte, 1);
        if (fcntl(fd, F_OFD_GETLK, 'void *', arg) !== 0) return false;
        return view.getInt16(0, little) !== F_UNLCK;
      },
    };
  } catch {
    ofd = null;
  }
  return ofd;
}

/** Whether this platform has QEMU-compatible (OFD) image locks. */
export function haveQemuLocks(): boolean {
  return loadOfd() !== null;
}

/** Context for the errors of {@link lockImage}. */
export interface LockContext {
  readonly node?: string;
  readonly field?: string;
}

/**
 * Takes QEMU's locks for `perms` on `fd` and checks nobody else's conflict, as QEMU's
 * raw_apply_lock_bytes then raw_check_lock_bytes. A conflict is an ELOCKED naming the
 * permission as QEMU does (`failed to get "write" lock`, `failed to get shared "write" lock`)
 * and the processes that hold it, with this open's locks released again. `auto` goes on
 * unlocked where the file system has no locks; `on` fails. Without OFD locks (not Linux) an
 * flock stands in: exclusive for a writer, shared otherwise, seen only by this library; where
 * flock cannot be called either (neither fs-ext nor koffi, see posix.ts) `auto` goes on unlocked.
 */
export async function lockImage(fd: number, filename: string, perms: ImagePermissions, locking: 'on' | 'auto', ctx: LockContext = {}): Promise<void> {
  const locks = loadOfd();
  if (locks === null) return flockImage(fd, filename, perms, locking, ctx);
  const err = (bit: number, shared: boolean, holders: string, cause?: unknown) =>
    new BlockError(
      'ELOCKED',
      `failed to get ${shared ? 'shared ' : ''}"${PERM_NAMES[bit]}" lock on '${filename}': is another process using the image?${holders}`,
      { ...ctx, path: filename, cause },
    );
  const release = () => locks.set(fd, F_UNLCK, LOCK_PERM_BASE, LOCK_SHARED_BASE + PERM_NAMES.length - LOCK_PERM_BASE);
  for (let i = 0; i < PERM_NAMES.length; i++) {
    const bit = 1 << i;
    for (const [mask, base] of [
      [perms.perm, LOCK_PERM_BASE],
      [~perms.shared, LOCK_SHARED_BASE],
    ] as const) {
      if (!(mask & bit)) continue;
      const errno = locks.set(fd, F_RDLCK, base + i, 1);
      if (errno === 0) continue;
      release();
      // Someone holds a write lock on the byte (QEMU never does): the image is in use all the same.
      if (errno === EAGAIN || errno === EACCES) throw err(i, base === LOCK_PERM_BASE, await describeLockHolders(fd, base + i));
      // 'auto' tolerates file systems without locks (QEMU does the same); 'on' does not.
      if (locking === 'auto') return;
      const name = getSystemErrorName(-errno);
      throw fromErrno(Object.assign(new Error(name), { code: name }), `could not lock '${filename}'`, { ...ctx, path: filename });
    }
  }
  for (let i = 0; i < PERM_NAMES.length; i++) {
    const bit = 1 << i;
    // A permission we want that somebody does not share; then one somebody has that we do not share.
    if (perms.perm & bit && locks.conflicts(fd, LOCK_SHARED_BASE + i)) {
      release();
      throw err(i, false, await describeLockHolders(fd, LOCK_SHARED_BASE + i));
    }
  }
  for (let i = 0; i < PERM_NAMES.length; i++) {
    const bit = 1 << i;
    if (!(perms.shared & bit) && locks.conflicts(fd, LOCK_PERM_BASE + i)) {
      release();
      throw err(i, true, await describeLockHolders(fd, LOCK_PERM_BASE + i));
    }
  }
}

async function flockImage(fd: number, filename: string, perms: ImagePermissions, locking: 'on' | 'auto', ctx: LockContext): Promise<void> {
  const writer = (perms.perm & Perm.write) !== 0;
  try {
    await flock(fd, writer ? 'exclusive' : 'shared');
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    if (errno === 'EAGAIN' || errno === 'EWOULDBLOCK') {
      throw new BlockError('ELOCKED', `failed to get ${writer ? '' : 'shared '}"write" lock on '${filename}': is another process using the image?`, { ...ctx, path: filename, cause: e });
    }
    // 'auto' tolerates file systems without locks (QEMU does the same), and a platform where
    // flock cannot be called (ENOTSUP, see posix.ts); 'on' does not.
    if (locking === 'auto') return;
    throw fromErrno(e, `could not lock '${filename}'`, { ...ctx, path: filename });
  }
}

/**
 * Moves an open's locks from `oldFd` to `newFd` (the same file opened anew, for a reopen) while
 * its permissions change from `from` to `to`, as QEMU's raw_check_perm/raw_set_perm with a
 * perm_change_fd: the old descriptor first takes what both need and is checked against everyone
 * else (its own locks never conflict with themselves), then the new one takes `to`'s bytes, and
 * the caller closes the old one, which drops the rest. A conflict is lockImage's ELOCKED with
 * the old locks as they were. Without OFD locks the flock is converted, then handed over.
 */
export async function moveLocks(oldFd: number, newFd: number, filename: string, from: ImagePermissions, to: ImagePermissions, locking: 'on' | 'auto', ctx: LockContext = {}): Promise<void> {
  const locks = loadOfd();
  if (locks === null) {
    // flock converts the old descriptor's lock in place (checked against others), then hands it over.
    await flockImage(oldFd, filename, to, locking, ctx);
    await flock(oldFd, 'unlock').catch(() => undefined);
    return flockImage(newFd, filename, to, locking, ctx);
  }
  const union: ImagePermissions = { perm: from.perm | to.perm, shared: from.shared & to.shared };
  const added: number[] = [];
  for (let i = 0; i < PERM_NAMES.length; i++) {
    const bit = 1 << i;
    if (union.perm & bit && !(from.perm & bit)) added.push(LOCK_PERM_BASE + i);
    if (!(union.shared & bit) && from.shared & bit) added.push(LOCK_SHARED_BASE + i);
  }
  const dropAdded = () => {
    for (const byte of added) locks.set(oldFd, F_UNLCK, byte, 1);
  };
  for (const byte of added) {
    const errno = locks.set(oldFd, F_RDLCK, byte, 1);
    if (errno === 0) continue;
    dropAdded();
    if (errno === EAGAIN || errno === EACCES) {
      const bit = (byte - LOCK_PERM_BASE) % 100;
      throw lockError(filename, bit, byte < LOCK_SHARED_BASE, await describeLockHolders(oldFd, byte), ctx);
    }
    if (locking === 'auto') return;
    const name = getSystemErrorName(-errno);
    throw fromErrno(Object.assign(new Error(name), { code: name }), `could not lock '${filename}'`, { ...ctx, path: filename });
  }
  for (let i = 0; i < PERM_NAMES.length; i++) {
    const bit = 1 << i;
    const byte = to.perm & bit && locks.conflicts(oldFd, LOCK_SHARED_BASE + i) ? LOCK_SHARED_BASE + i : !(to.shared & bit) && locks.conflicts(oldFd, LOCK_PERM_BASE + i) ? LOCK_PERM_BASE + i : -1;
    if (byte < 0) continue;
    dropAdded();
    throw lockError(filename, i, byte < LOCK_SHARED_BASE, await describeLockHolders(oldFd, byte), ctx);
  }
  for (let i = 0; i < PERM_NAMES.length; i++) {
    const bit = 1 << i;
    if (to.perm & bit) locks.set(newFd, F_RDLCK, LOCK_PERM_BASE + i, 1);
    if (!(to.shared & bit)) locks.set(newFd, F_RDLCK, LOCK_SHARED_BASE + i, 1);
  }
}

function lockError(filename: string, bit: number, shared: boolean, holders: string, ctx: LockContext): BlockError {
  return new BlockError('ELOCKED', `failed to get ${shared ? 'shared ' : ''}"${PERM_NAMES[bit]}" lock on '${filename}': is another process using the image?${holders}`, { ...ctx, path: filename });
}
