import fs from 'node:fs';
import util from 'node:util';
import { sharedUring } from './uring.js';

/** The file driver's I/O engines (QEMU `aio=`): Node's thread pool or io_uring. */
export type AioEngine = 'threads' | 'io_uring';
export const AIO_ENGINES = ['threads', 'io_uring'] as const;

type IoCallback = (err: NodeJS.ErrnoException | null, n: number) => void;

/** Positional I/O on an fd, callback style (the signatures of fs.read / fs.write / fs.fdatasync). */
export interface IoEngine {
  readonly name: AioEngine;
  read(fd: number, buffer: Uint8Array, start: number, length: number, position: number, cb: IoCallback): void;
  write(fd: number, data: Uint8Array, start: number, length: number, position: number, cb: IoCallback): void;
  fdatasync(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void;
  /**
   * preadv/pwritev, where one call costs a trip the engine wants to save: the file driver then
   * merges adjacent requests of one turn (see merge.ts). The thread pool has them; io_uring
   * completes page-cache reads inside its submit call and needs no merging.
   */
  readonly readv?: (fd: number, buffers: Uint8Array[], position: number, cb: IoCallback) => void;
  readonly writev?: (fd: number, buffers: Uint8Array[], position: number, cb: IoCallback) => void;
}

const threads: IoEngine = {
  name: 'threads',
  read: fs.read,
  write: fs.write,
  fdatasync: fs.fdatasync,
  // Looked up per call (not bound at load) so tests can watch the merged calls.
  readv: (fd, buffers, position, cb) => fs.readv(fd, buffers, position, cb),
  writev: (fd, buffers, position, cb) => fs.writev(fd, buffers, position, cb),
};

/** An error shaped like Node's fs errors (code, errno, syscall), so callers map it the same way. */
function errnoError(negErrno: number, syscall: string): NodeJS.ErrnoException {
  const code = util.getSystemErrorName(negErrno);
  return Object.assign(new Error(`${code}: ${syscall} failed (io_uring)`), { code, errno: negErrno, syscall });
}

let uringEngine: IoEngine | string | undefined;

function ioUring(): IoEngine | string {
  if (uringEngine !== undefined) return uringEngine;
  const ring = sharedUring();
  if (typeof ring === 'string') {
    uringEngine = ring;
    return ring;
  }
  uringEngine = {
    name: 'io_uring',
    read(fd, buffer, start, length, position, cb) {
      ring.read(fd, buffer, start, length, position, (res) => (res < 0 ? cb(errnoError(res, 'read'), 0) : cb(null, res)));
    },
    write(fd, data, start, length, position, cb) {
      ring.write(fd, data, start, length, position, (res) => (res < 0 ? cb(errnoError(res, 'write'), 0) : cb(null, res)));
    },
    fdatasync(fd, cb) {
      ring.fdatasync(fd, (res) => cb(res < 0 ? errnoError(res, 'fdatasync') : null));
    },
  };
  return uringEngine;
}

let warned = false;

/**
 * The engine for `aio`. io_uring falls back to threads where the kernel refuses it (too old,
 * disabled by sysctl or seccomp, no koffi), with one process warning (code
 * BLOCKLAYER_AIO_FALLBACK) saying why; the node's info() names the engine actually used.
 */
export function selectEngine(aio: AioEngine): IoEngine {
  if (aio === 'threads') return threads;
  const engine = ioUring();
  if (typeof engine !== 'string') return engine;
  if (!warned) {
    warned = true;
    process.emitWarning(`file driver: aio 'io_uring' unavailable, using 'threads' instead: ${engine}`, {
      code: 'BLOCKLAYER_AIO_FALLBACK',
    });
  }
  return threads;
}

/** Default engine: BLOCKLAYER_FILE_AIO (threads | io_uring) if set, else threads. */
export function defaultAio(): AioEngine {
  const env = process.env.BLOCKLAYER_FILE_AIO;
  return env === 'io_uring' ? 'io_uring' : 'threads';
}
