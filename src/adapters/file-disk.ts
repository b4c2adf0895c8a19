import { Disk, type ReadResult, type WriteResult } from 'file-disk';
import type { Drive } from '../drive.js';
import { BlockError } from '../errors.js';

/** Options of {@link DriveDisk}: file-disk's constructor flags. */
export interface DriveDiskOptions {
  /**
   * Never send writes, discards or flushes to the drive (default: the drive's own `readOnly`).
   * `false` on a read-only drive is refused with EROFS.
   */
  readOnly?: boolean;
  /**
   * Keep written bytes in `knownChunks`; later reads of them come from memory (file-disk's
   * overlay). Default: the same as `readOnly`, so a read-only disk takes writes into memory and
   * never to the drive (ext2fs writes even to read files: access times). With `readOnly` and
   * `recordWrites: false`, writes are refused with EROFS (file-disk would drop them and report success).
   */
  recordWrites?: boolean;
  /** Keep read bytes in `knownChunks` (file-disk). */
  recordReads?: boolean;
}

/**
 * A file-disk `Disk` over a blocklayer {@link Drive}, for ext2fs, balena-image-fs, etcher-sdk
 * and other file-disk consumers: reads, writes and flushes go to the drive (with its throttling,
 * error policy and accounting); discards go to the drive and are recorded for
 * `getDiscardedChunks()` / `getRanges()`. Drive errors reject the Disk's promises as they are
 * (BlockError) and are kept in `lastError`. The drive stays open: close it after the consumer is
 * done (e.g. after umount).
 *
 * `discardIsZero` is always false: a blocklayer discard is a hint (a driver may ignore it and
 * only the aligned part of the range is passed down), so discarded bytes are read from the
 * drive, never assumed to be zeros.
 */
export class DriveDisk extends Disk {
  /** The drive every read, write, flush and discard goes to. */
  readonly drive: Drive;
  /**
   * The last error a read, write, flush or discard of this disk rejected with. ext2fs turns every
   * disk rejection into a bare EIO: this keeps the drive's own error (code, offset, node) for the report.
   */
  lastError: unknown = null;

  /** A Disk over `drive`, with file-disk's flags as {@link DriveDiskOptions} describes them. */
  constructor(drive: Drive, options: DriveDiskOptions = {}) {
    const readOnly = options.readOnly ?? drive.readOnly;
    if (!readOnly && drive.readOnly) {
      throw new BlockError('EROFS', `readOnly: drive ${drive.id} is read-only; a writable DriveDisk needs a writable drive`, {
        field: 'readOnly',
        node: drive.node.name,
      });
    }
    super(readOnly, options.recordWrites ?? readOnly, options.recordReads ?? false, false);
    this.drive = drive;
  }

  /** The drive's length in bytes. */
  protected async _getCapacity(): Promise<number> {
    return this.drive.length;
  }

  /** Reads from the drive into the buffer's range. */
  protected async _read(buffer: Buffer, bufferOffset: number, length: number, fileOffset: number): Promise<ReadResult> {
    await this.drive.read(fileOffset, buffer.subarray(bufferOffset, bufferOffset + length));
    return { bytesRead: length, buffer };
  }

  /** Writes the buffer's range to the drive. */
  protected async _write(buffer: Buffer, bufferOffset: number, length: number, fileOffset: number): Promise<WriteResult> {
    await this.drive.write(fileOffset, buffer.subarray(bufferOffset, bufferOffset + length));
    return { bytesWritten: length, buffer };
  }

  /** Flushes the drive. */
  protected async _flush(): Promise<void> {
    await this.drive.flush();
  }

  /** file-disk's read ignores `bufferOffset` (it fills from 0): honour it by reading into the subrange. */
  override read(buffer: Buffer, bufferOffset: number, length: number, fileOffset: number): Promise<ReadResult> {
    return this.noting(async () => {
      const refused = rangeError('read', buffer, bufferOffset, length);
      if (refused !== null) throw refused;
      await super.read(buffer.subarray(bufferOffset, bufferOffset + length), 0, length, fileOffset);
      return { bytesRead: length, buffer };
    });
  }

  /** A read-only disk without `recordWrites` would drop the write and report success (file-disk): refuse it instead. */
  override write(buffer: Buffer, bufferOffset: number, length: number, fileOffset: number): Promise<WriteResult> {
    return this.noting(async () => {
      if (this.readOnly && !this.recordWrites) {
        throw new BlockError('EROFS', `write: DriveDisk over drive ${this.drive.id} is read-only (set recordWrites to keep writes in memory)`, {
          node: this.drive.node.name,
          offset: fileOffset,
          length,
        });
      }
      const refused = rangeError('write', buffer, bufferOffset, length);
      if (refused !== null) throw refused;
      // file-disk silently drops a recorded write past the end: refuse it as the drive would.
      if (!Number.isSafeInteger(fileOffset) || fileOffset < 0 || fileOffset + length > this.drive.length) {
        throw new BlockError('EINVAL', `write: range ${fileOffset}+${length} is beyond the end of drive ${this.drive.id} (${this.drive.length} bytes)`, {
          node: this.drive.node.name,
          offset: fileOffset,
          length,
        });
      }
      return super.write(buffer, bufferOffset, length, fileOffset);
    });
  }

  /** Flushes the drive, keeping a failure in `lastError`. */
  override flush(): Promise<void> {
    return this.noting(() => super.flush());
  }

  /** Discards on the drive (unless read-only), then records the range as file-disk does. */
  override discard(offset: number, length: number): Promise<void> {
    return this.noting(async () => {
      if (!this.readOnly) await this.drive.discard(offset, length);
      await super.discard(offset, length);
    });
  }

  /** Runs an operation, keeping its error in `lastError` before rejecting with it. */
  private async noting<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (e) {
      this.lastError = e;
      throw e;
    }
  }
}

/** A buffer range outside the buffer would make the drive read or write the wrong bytes silently (subarray clamps). */
function rangeError(op: 'read' | 'write', buffer: Buffer, bufferOffset: number, length: number): BlockError | null {
  if (Number.isSafeInteger(bufferOffset) && Number.isSafeInteger(length) && bufferOffset >= 0 && length >= 0 && bufferOffset + length <= buffer.length) {
    return null;
  }
  return new BlockError('EINVAL', `${op}: bufferOffset ${bufferOffset} + length ${length} is outside the buffer (${buffer.length} bytes)`, {
    field: 'bufferOffset',
  });
}

/** Wraps a drive as a file-disk `Disk` (see {@link DriveDisk}). */
export function toFileDisk(drive: Drive, options?: DriveDiskOptions): DriveDisk {
  return new DriveDisk(drive, options);
}
