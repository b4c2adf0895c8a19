import { createRequire } from 'node:module';

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
    const require = createRequire(import.meta.url);
    const koffi = require('koffi') as typeof import('koffi');
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
