import fs from 'node:fs';
import { createRequire } from 'node:module';
import { getSystemErrorName } from 'node:util';
import { loadKoffi as koffiModule } from '../../platform/koffi-load.js';

/**
 * lseek(2) and flock(2), which Node does not bind, for the file driver. Three backends, tried in
 * this order on first use:
 * - `fs-ext`: the optional native addon, when it was installed and built;
 * - `koffi`: the same calls into the C library through koffi (prebuilt, no compiler needed),
 *   on the libuv pool like fs-ext's;
 * - `none`: SEEK_END from fstat (so 0 for a block device), SEEK_DATA/SEEK_HOLE and flock
 *   rejected with ENOTSUP — callers then count everything as data and go on unlocked (as
 *   `locking: auto` does where the file system has no locks).
 * Callers do not care which one answered; {@link posixBackend} says it.
 */

/** Where a seek starts from: the end of the file, the next data, the next hole. */
export type SeekFrom = 'end' | 'data' | 'hole';

/** flock(2) modes; never blocking (LOCK_NB), so a held lock fails with EWOULDBLOCK at once. */
export type FlockMode = 'shared' | 'exclusive' | 'unlock';

export type PosixBackendName = 'fs-ext' | 'koffi' | 'none';

export interface PosixCalls {
  readonly name: PosixBackendName;
  /** lseek(fd, offset, whence): the new offset; rejects with the errno as `code` (ENXIO: no data/hole after offset). */
  seek(fd: number, offset: number, from: SeekFrom): Promise<number>;
  /** flock(fd, mode | LOCK_NB); rejects with the errno as `code` (EWOULDBLOCK/EAGAIN: someone holds a conflicting lock). */
  flock(fd: number, mode: FlockMode): Promise<void>;
}

const SEEK_END = 2;
/** SEEK_DATA and SEEK_HOLE are 3 and 4 on Linux and the BSDs, the other way round on macOS. */
const SEEK_DATA = process.platform === 'darwin' ? 4 : 3;
const SEEK_HOLE = process.platform === 'darwin' ? 3 : 4;
const WHENCE: Record<SeekFrom, number> = { end: SEEK_END, data: SEEK_DATA, hole: SEEK_HOLE };

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const FLOCK_OP: Record<FlockMode, number> = { shared: LOCK_SH | LOCK_NB, exclusive: LOCK_EX | LOCK_NB, unlock: LOCK_UN };
const FS_EXT_FLOCK = { shared: 'shnb', exclusive: 'exnb', unlock: 'un' } as const;

/** The C library koffi loads per platform, and the name of its 64-bit lseek. */
const LIBC: Partial<Record<NodeJS.Platform, { lib: string; lseek: string }>> = {
  linux: { lib: 'libc.so.6', lseek: 'lseek64' },
  darwin: { lib: 'libSystem.B.dylib', lseek: 'lseek' },
  freebsd: { lib: 'libc.so.7', lseek: 'lseek' },
};

function errnoError(syscall: string, code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${syscall}: ${code}`), { code, syscall });
}

type FsExt = typeof import('fs-ext');

function loadFsExt(): PosixCalls | null {
  let fsExt: FsExt;
  try {
    // A CommonJS native addon: require throws when it is absent or its binary was never built.
    fsExt = createRequire(import.meta.url)('fs-ext') as FsExt;
    if (typeof fsExt.seek !== 'function' || typeof fsExt.flock !== 'function') return null;
  } catch {
    return null;
  }
  return {
    name: 'fs-ext',
    seek: (fd, offset, from) =>
      new Promise((resolve, reject) => fsExt.seek(fd, offset, WHENCE[from], (err, pos) => (err ? reject(err) : resolve(pos)))),
    flock: (fd, mode) => new Promise((resolve, reject) => fsExt.flock(fd, FS_EXT_FLOCK[mode], (err) => (err ? reject(err) : resolve()))),
  };
}

type Koffi = typeof import('koffi');
type CFunction = ReturnType<ReturnType<Koffi['load']>['func']>;

function loadKoffi(): PosixCalls | null {
  const libc = LIBC[process.platform];
  if (libc === undefined) return null;
  let koffi: Koffi;
  let lseek: CFunction;
  let flock: CFunction;
  try {
    koffi = koffiModule();
    const lib = koffi.load(libc.lib);
    lseek = lib.func(`int64_t ${libc.lseek}(int fd, int64_t offset, int whence)`);
    flock = lib.func('int flock(int fd, int operation)');
  } catch {
    return null;
  }
  /**
   * Runs `fn` on the libuv pool; on -1 it runs again on this thread to read errno, which koffi
   * does not promise to carry back from a pool thread. Both calls here never block (lseek, and
   * flock with LOCK_NB or LOCK_UN), so the repeat is cheap, and it answers for the file as it is now.
   */
  const call = (fn: CFunction, syscall: string, args: number[]): Promise<number> =>
    new Promise((resolve, reject) => {
      fn.async(...args, (err: unknown, res: number | bigint) => {
        if (err) return reject(err);
        let r = Number(res);
        if (r !== -1) return resolve(r);
        r = Number(fn(...args));
        if (r !== -1) return resolve(r);
        const errno = koffi.errno();
        reject(errnoError(syscall, errno > 0 ? getSystemErrorName(-errno) : 'EIO'));
      });
    });
  return {
    name: 'koffi',
    seek: (fd, offset, from) => call(lseek, 'lseek', [fd, offset, WHENCE[from]]),
    flock: async (fd, mode) => {
      await call(flock, 'flock', [fd, FLOCK_OP[mode]]);
    },
  };
}

/** Without either: the size from fstat, and ENOTSUP for what only the system calls can tell. */
const NONE: PosixCalls = {
  name: 'none',
  seek: (fd, _offset, from) =>
    from === 'end'
      ? new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st.size))))
      : Promise.reject(errnoError('lseek', 'ENOTSUP')),
  flock: () => Promise.reject(errnoError('flock', 'ENOTSUP')),
};

/** The backend called `name`, or null where it cannot load (for tests that try each one). */
export function loadPosixBackend(name: PosixBackendName): PosixCalls | null {
  return name === 'fs-ext' ? loadFsExt() : name === 'koffi' ? loadKoffi() : NONE;
}

let chosen: PosixCalls | undefined;

/**
 * Asked only when a backend is chosen: node:worker_threads loads Node's stream modules with it,
 * a large share of a short verb's start-up (`blocklayer info` never needs a backend).
 */
function onMainThread(): boolean {
  return (process.getBuiltinModule('node:worker_threads') as typeof import('node:worker_threads')).isMainThread;
}

function calls(): PosixCalls {
  // fs-ext's addon calls back into V8 from a thread pool without a worker's isolate lock: in a worker thread (an iothread) it aborts the process.
  chosen ??= (onMainThread() ? loadFsExt() : null) ?? loadKoffi() ?? NONE;
  return chosen;
}

/** Which backend serves {@link seek} and {@link flock} in this process. */
export function posixBackend(): PosixBackendName {
  return calls().name;
}

/** lseek(2): where `from` (SEEK_END, SEEK_DATA, SEEK_HOLE) lands from `offset`. */
export function seek(fd: number, offset: number, from: SeekFrom): Promise<number> {
  return calls().seek(fd, offset, from);
}

/** flock(2) without blocking. */
export function flock(fd: number, mode: FlockMode): Promise<void> {
  return calls().flock(fd, mode);
}
