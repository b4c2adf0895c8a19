// A drive's guest view as a WHATWG ReadableStream: portable (Node 20 and browsers), so no node: import here.
import { type StreamedDrive, type StreamRange, type StreamRangeOptions, streamAborted, streamRange } from './stream-range.js';

/** Options of Drive.readableStream. */
export interface DriveReadableStreamOptions extends StreamRangeOptions {
  /** Bytes per chunk, one drive read each (default 64 KiB); the last chunk may be shorter. */
  chunkSize?: number;
}

/**
 * The underlying source of the stream: one drive read per pull, one chunk read ahead at most
 * (the stream's default high-water mark of one chunk). Reads carry the source's own signal, so
 * that a cancel, or the caller's signal, cancels a read still waiting in the drive.
 */
class DriveSource {
  private pos: number;
  private readonly abort = new AbortController();
  private readonly readOptions = { signal: this.abort.signal };
  private controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  /** The read in progress (settles, never rejects), or null. */
  private reading: Promise<void> | null = null;
  private finished = false;
  private readonly onAbort = (): void => this.aborted();
  private readonly onChunk = (chunk: Uint8Array): void => {
    this.reading = null;
    if (this.finished) return;
    this.pos += chunk.length;
    this.controller!.enqueue(chunk);
    if (this.pos >= this.range.end) {
      this.finish();
      this.controller!.close();
    }
  };
  private readonly onError = (e: unknown): void => {
    this.reading = null;
    if (this.finished) return;
    this.finish();
    this.controller!.error(e);
  };

  constructor(
    private readonly drive: StreamedDrive,
    private readonly range: StreamRange,
  ) {
    this.pos = range.start;
  }

  start(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.controller = controller;
    const signal = this.range.signal;
    if (signal?.aborted) {
      this.aborted();
      return;
    }
    signal?.addEventListener('abort', this.onAbort, { once: true });
    if (this.pos >= this.range.end) {
      this.finish();
      controller.close();
    }
  }

  pull(): Promise<void> | undefined {
    if (this.finished) return undefined;
    const length = Math.min(this.range.chunk, this.range.end - this.pos);
    this.reading = this.drive.read(this.pos, length, this.readOptions).then(this.onChunk, this.onError);
    return this.reading;
  }

  /** A reader cancelled the stream: the read in progress is cancelled too, and settles before this does. */
  cancel(reason: unknown): Promise<void> {
    if (!this.finished) {
      this.finish();
      this.abort.abort(reason);
    }
    return this.reading ?? Promise.resolve();
  }

  /** The caller's signal aborted: the stream errors with ECANCELED at once. */
  private aborted(): void {
    if (this.finished) return;
    const reason = this.range.signal!.reason;
    this.finish();
    this.abort.abort(reason);
    this.controller!.error(streamAborted(this.drive, this.pos, reason));
  }

  private finish(): void {
    this.finished = true;
    this.range.signal?.removeEventListener('abort', this.onAbort);
  }
}

/**
 * The bytes [start, end] of a drive's guest view as a WHATWG ReadableStream of Uint8Array
 * chunks, read as the consumer asks for them. Bad options (EINVAL naming the field) and a
 * closed drive (ECLOSED) error the stream instead of throwing; so do read errors (the drive's
 * BlockError) and the signal (ECANCELED). Cancelling the stream cancels the read in progress.
 */
export function driveReadableStream(drive: StreamedDrive, options?: DriveReadableStreamOptions): ReadableStream<Uint8Array> {
  const range = streamRange(drive, options, 'chunkSize');
  if (range instanceof Error) {
    return new ReadableStream<Uint8Array>({
      start(controller) {
        controller.error(range);
      },
    });
  }
  return new ReadableStream<Uint8Array>(new DriveSource(drive, range));
}
