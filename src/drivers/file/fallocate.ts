import { loadKoffi } from '../../platform/koffi-load.js';
import os from 'node:os';
import { getSystemErrorMap } from 'node:util';
import { type BlockErrorCode, codeForErrno } from '../../errors.js';

/** fallocate(2) modes used here. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

type AsyncCall = (fd: number, mode: number, offset: number, length: number, cb: (err: unknown, res: number) => void) => void;

let fallocateAsync: AsyncCall | null | undefined;

/**
 * fallocate(2) through koffi on the libuv pool (Node has no binding). Loaded on first use;
 * null when libc or koffi is unavailable, and callers fall back (discard is advisory,
 * write-zeroes writes zero buffers).
 */
function load(): AsyncCall | null {
  if (fallocateAsync !== undefined) return fallocateAsync;
  try {
    const koffi = loadKoffi();
    const libc = koffi.load('libc.so.6');
    const fn = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
    fallocateAsync = (fd, mode, offset, length, cb) => fn.async(fd, mode, offset, length, cb);
  } catch {
    fallocateAsync = null;
  }
  return fallocateAsync;
}

/** Runs fallocate; resolves true on success, false if it failed or is unavailable (errno is not kept). */
export function tryFallocate(fd: number, mode: number, offset: number, length: number): Promise<boolean> {
  const call = load();
  if (call === null) return Promise.resolve(false);
  return new Promise((resolve) => {
    call(fd, mode, offset, length, (err, res) => resolve(!err && res === 0));
  });
}

type ReserveCall = (fd: number, offset: number, length: number, cb: (err: unknown, res: number) => void) => void;

let reserveAsync: ReserveCall | null | undefined;

/** posix_fallocate(3) through koffi on the libuv pool; null when libc or koffi is unavailable. */
function loadReserve(): ReserveCall | null {
  if (reserveAsync !== undefined) return reserveAsync;
  try {
    const koffi = loadKoffi();
    const libc = koffi.load('libc.so.6');
    const fn = libc.func('int posix_fallocate64(int fd, int64_t offset, int64_t len)');
    reserveAsync = (fd, offset, length, cb) => fn.async(fd, offset, length, cb);
  } catch {
    reserveAsync = null;
  }
  return reserveAsync;
}

/** Errno numbers to names (the first name of a number: ENOTSUP and EOPNOTSUPP are one on Linux). */
const ERRNO_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(os.constants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);

/** The name of an errno number (`28` → `ENOSPC` on Linux); `E<n>` for a number the platform does not name. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? getSystemErrorMap().get(-errno)?.[0] ?? `E${errno}`;
}

/** An errno number in words with its name (`no space left on device (ENOSPC)`); `error <n>` for one the platform does not name. */
export function errnoText(errno: number): string {
  const name = errnoName(errno);
  if (name === `E${errno}`) return `error ${errno}`;
  const words = getSystemErrorMap().get(-errno)?.[1];
  return words === undefined ? name : `${words} (${name})`;
}

/**
 * The BlockError code of an error number returned by posix_fallocate: the errno's own code
 * (ENOSPC and EDQUOT → ENOSPC, EFBIG → EFBIG, EIO → EIO, …); ENOTSUP only when the file or
 * file system cannot reserve space (EOPNOTSUPP, ENOSYS).
 */
export function fallocateErrorCode(errno: number): BlockErrorCode {
  return codeForErrno(errnoName(errno));
}

/**
 * Reserves [offset, offset+length) of a file with posix_fallocate(3), as QEMU's
 * preallocation=falloc does. Resolves 0 on success, else the error number posix_fallocate
 * returned (it returns the error instead of setting errno); EOPNOTSUPP when the call is unavailable.
 */
export function reserveSpace(fd: number, offset: number, length: number): Promise<number> {
  const call = loadReserve();
  if (call === null) return Promise.resolve(os.constants.errno.EOPNOTSUPP);
  return new Promise((resolve) => {
    call(fd, offset, length, (err, res) => resolve(err ? os.constants.errno.EOPNOTSUPP : res));
  });
}
