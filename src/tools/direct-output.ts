import fsp, { type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { fromErrno } from '../errors.js';
import type { OutputFile } from './atomic-output.js';
import { isAligned } from './aligned-buffer.js';

/**
 * Offsets, lengths and memory of direct writes are multiples of this: the largest logical
 * block size of common devices (4Kn disks), so it suits 512-byte devices too.
 */
export const DIRECT_ALIGN = 4096;

/**
 * The output file written past the page cache (O_DIRECT, qemu-img's `-t none`): data goes from
 * the caller's buffer to the device, without the kernel's copy into page-cache pages that it
 * must allocate first, the main cost of a buffered convert (measured: most of its system time,
 * for qemu-img as for us). Writes that are not aligned (an image's unaligned tail, a buffer
 * not from alignedBuffer) go through the page cache, as do all writes once the file system
 * refuses a direct one. The output's flush (the atomic output's fsync) still makes it durable.
 */
export class DirectOutput {
  private constructor(
    private readonly out: OutputFile,
    private handle: FileHandle | undefined,
  ) {}

  /** A second descriptor of the output opened with O_DIRECT, or undefined where the file system has none. */
  static async open(out: OutputFile): Promise<DirectOutput | undefined> {
    if (constants.O_DIRECT === undefined) return undefined;
    try {
      return new DirectOutput(out, await fsp.open(out.tempPath, constants.O_WRONLY | constants.O_DIRECT));
    } catch {
      // no O_DIRECT here (a file system without it): the page cache it is
      return undefined;
    }
  }

  /** Writes all of `data` at `offset`: directly where offset, length and memory are aligned, else through the page cache. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    const h = this.handle;
    if (h === undefined || offset % DIRECT_ALIGN !== 0 || data.length % DIRECT_ALIGN !== 0 || !isAligned(data, DIRECT_ALIGN)) {
      return this.out.write(offset, data);
    }
    this.out.signal.throwIfAborted();
    let done = 0;
    try {
      while (done < data.length) {
        const { bytesWritten } = await h.write(data, done, data.length - done, offset + done);
        // a short direct write (a full disk) is finished by the buffered path, which reports it
        if (bytesWritten === 0) break;
        done += bytesWritten;
      }
    } catch (e) {
      // EINVAL: this file system wants another alignment; the rest goes through the page cache
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw fromErrno(e, `could not write '${this.out.target}' at ${offset + done}`, { path: this.out.target, offset: offset + done });
      await this.close();
    }
    if (done < data.length) await this.out.write(offset + done, data.subarray(done));
  }

  /** Closes the direct descriptor (the output's own descriptor flushes the file). */
  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }
}
