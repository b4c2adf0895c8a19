// A drive's guest view as a Node Readable. Node only: the package's Node entry (src/index.ts)
// loads this module, which also gives Drive its createReadStream method; the browser entry does
// not, so node:stream never reaches the browser build.
import { Readable } from 'node:stream';
import { Drive } from '../drive.js';
import { type StreamRange, type StreamRangeOptions, streamAborted, streamRange } from './stream-range.js';

/** Options of {@link createDriveReadStream} (and Drive.createReadStream). */
export interface DriveReadStreamOptions extends StreamRangeOptions {
  /** Bytes per read of the drive, and the stream's buffer (default 64 KiB, as fs.createReadStream's). */
  highWaterMark?: number;
}

/**
 * A Readable over a drive: one drive read per `_read` (the stream asks only while its buffer is
 * below the high-water mark), with the stream's own signal, so destroying the stream cancels a
 * read still waiting in the drive. `close` comes after the read in progress has settled.
 */
class DriveReadStream extends Readable {
  private pos: number;
  private readonly abort = new AbortController();
  private readonly readOptions = { signal: this.abort.signal };
  private reading: Promise<void> | null = null;
  private readonly onAbort = (): void => {
    this.destroy(streamAborted(this.drive, this.pos, this.range!.signal!.reason));
  };
  private readonly onChunk = (chunk: Uint8Array): void => {
    this.reading = null;
    if (this.destroyed) return;
    this.pos += chunk.length;
    this.push(chunk);
    if (this.pos >= this.range!.end) this.push(null);
  };
  private readonly onError = (e: unknown): void => {
    this.reading = null;
    this.destroy(e as Error);
  };

  constructor(
    private readonly drive: Drive,
    private readonly range: StreamRange | null,
    refusal: Error | null,
  ) {
    super({ highWaterMark: range?.chunk ?? 0 });
    this.pos = range?.start ?? 0;
    if (refusal !== null) {
      this.destroy(refusal);
      return;
    }
    const signal = range!.signal;
    if (signal?.aborted) {
      this.onAbort();
      return;
    }
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  override _read(): void {
    if (this.reading !== null) return;
    const range = this.range!;
    if (this.pos >= range.end) {
      this.push(null);
      return;
    }
    const length = Math.min(range.chunk, range.end - this.pos);
    this.reading = this.drive.read(this.pos, length, this.readOptions).then(this.onChunk, this.onError);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.range?.signal?.removeEventListener('abort', this.onAbort);
    const reading = this.reading;
    if (reading === null) {
      callback(error);
      return;
    }
    this.abort.abort(error ?? streamAborted(this.drive, this.pos, undefined));
    reading.then(() => callback(error));
  }
}

/**
 * The bytes [start, end] of a drive's guest view as a Node Readable (`end` inclusive, as in
 * fs.createReadStream), read as the consumer asks for them; `stream.pipeline` and `for await`
 * work as with a file stream. Bad options (EINVAL naming the field), a closed drive (ECLOSED),
 * read errors (the drive's BlockError) and the signal (ECANCELED, `cause`: its reason) become
 * the stream's error; nothing throws. Destroying the stream cancels the read in progress.
 */
export function createDriveReadStream(drive: Drive, options?: DriveReadStreamOptions): Readable {
  const range = streamRange(drive, options, 'highWaterMark');
  return range instanceof Error ? new DriveReadStream(drive, null, range) : new DriveReadStream(drive, range, null);
}

declare module '../drive.js' {
  interface Drive {
    /** The drive's guest view as a Node Readable: see {@link createDriveReadStream} (Node only; in browsers use {@link Drive.readableStream}). */
    createReadStream(options?: DriveReadStreamOptions): Readable;
  }
}

Drive.prototype.createReadStream = function createReadStream(this: Drive, options?: DriveReadStreamOptions): Readable {
  return createDriveReadStream(this, options);
};
