// Starting the write-out of a file's dirty pages without waiting for it: Linux
// sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE). A later fdatasync of the file then
// finds them written, or on their way, instead of writing them all itself. A hint only: it makes
// nothing durable (no wait, no file system journal, no disk cache flush) and its failures are not
// reported (the fdatasync that follows reports the file's write errors). Node has no binding:
// the C library's through koffi, on the libuv pool (the call waits when the device's queue is
// full). The browser build swaps in writeback.browser.ts.
import fs from 'node:fs';
import { loadKoffi } from './koffi-load.js';

/** Starts the write-out of one open file's dirty pages. */
export interface WritebackHint {
  /** Starts the write-out of the file's dirty pages (all of them); resolves once it was started (never rejects). */
  start(): Promise<void>;
  /** Closes the hint's own descriptor; {@link start} must not be called after. */
  close(): Promise<void>;
}

const SYNC_FILE_RANGE_WRITE = 2;

type Koffi = typeof import('koffi');
type CFunction = ReturnType<ReturnType<Koffi['load']>['func']>;

/** sync_file_range of the C library, null where it cannot be called; bound on first use. */
let syncFileRange: CFunction | null | undefined;

function bind(): CFunction | null {
  if (syncFileRange !== undefined) return syncFileRange;
  syncFileRange = null;
  if (process.platform !== 'linux') return null;
  try {
    syncFileRange = loadKoffi().load('libc.so.6').func('int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags)');
  } catch {
    // no koffi (an optional dependency), or a C library without the call (musl has it; others may not)
  }
  return syncFileRange;
}

const close = (fd: number) => new Promise<void>((resolve) => fs.close(fd, () => resolve()));

/**
 * A hint for the regular file `filename` on a read-only descriptor of its own (sync_file_range
 * acts on the file's pages, whichever descriptor names it), or null where there can be none:
 * not Linux, no koffi, the file not openable or not a regular file.
 */
export async function openWritebackHint(filename: string): Promise<WritebackHint | null> {
  const call = bind();
  if (call === null) return null;
  // O_NONBLOCK: a FIFO put in the file's place cannot hold the open (fstat refuses it below).
  const fd = await new Promise<number | null>((resolve) => fs.open(filename, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK, (err, f) => resolve(err ? null : f)));
  if (fd === null) return null;
  const regular = await new Promise<boolean>((resolve) => fs.fstat(fd, (err, st) => resolve(!err && st.isFile())));
  if (!regular) {
    await close(fd);
    return null;
  }
  return {
    start: () =>
      new Promise<void>((resolve) => {
        call.async(fd, 0, 0, SYNC_FILE_RANGE_WRITE, () => resolve());
      }),
    close: () => close(fd),
  };
}
