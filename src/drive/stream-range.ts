import { BlockError, valueText } from '../errors.js';
import { MAX_BUFFER_LENGTH } from '../platform/buffer-limit.js';
import { describe, isSignal } from './args.js';

/** Bytes per chunk of a drive's streams unless told otherwise (as fs.createReadStream's highWaterMark). */
export const DEFAULT_CHUNK_SIZE = 64 * 1024;

/**
 * What a read stream needs of a drive (a Drive is one): a small shape defined here, below the
 * Drive class, so the stream modules and drive.ts do not import each other.
 */
export interface StreamedDrive {
  readonly id: string;
  readonly node: { readonly name: string };
  /** Size in bytes. */
  readonly length: number;
  readonly closed: boolean;
  read(offset: number, length: number, options?: { signal?: AbortSignal }): Promise<Uint8Array>;
}

/** The options both kinds of read stream share; `end` is inclusive, as in fs.createReadStream. */
export interface StreamRangeOptions {
  /** First byte to read (default 0). */
  start?: number;
  /** Last byte to read, inclusive as in fs.createReadStream (default: the drive's last byte). */
  end?: number;
  /** Aborting it ends the stream with an ECANCELED BlockError whose `cause` is the signal's reason. */
  signal?: AbortSignal;
}

/** What a read stream reads: bytes [start, end) in chunks of `chunk` bytes. */
export interface StreamRange {
  start: number;
  /** Exclusive. */
  end: number;
  chunk: number;
  signal: AbortSignal | undefined;
}

/**
 * Checks a read stream's options against the drive: the range to read, or the error the stream
 * fails with (ECLOSED for a closed drive, EINVAL naming the field). `chunkField` names the
 * option that gives the chunk size. Never throws, whatever the values.
 */
export function streamRange(drive: StreamedDrive, options: unknown, chunkField: 'chunkSize' | 'highWaterMark'): StreamRange | BlockError {
  const node = drive.node.name;
  const invalid = (field: string, detail: string) => new BlockError('EINVAL', `read stream of drive ${drive.id}: ${detail}`, { node, field });
  if (drive.closed) return new BlockError('ECLOSED', `read stream: drive ${drive.id} is closed`, { node });
  if (options !== undefined && (typeof options !== 'object' || options === null)) return invalid('options', `options must be an object, not ${describe(options)}`);
  const o = (options ?? {}) as Record<string, unknown>;
  const size = drive.length;
  const start = o.start ?? 0;
  if (!Number.isSafeInteger(start) || (start as number) < 0 || (start as number) > size) {
    return invalid('start', `start ${valueText(start)} must be an integer from 0 to the drive's size (${size})`);
  }
  const end = o.end ?? size - 1;
  if (!Number.isSafeInteger(end) || (end as number) < (start as number) - 1 || (end as number) > size - 1) {
    return invalid('end', `end ${valueText(end)} must be an integer from start - 1 (${(start as number) - 1}, nothing to read) to the drive's last byte (${size - 1})`);
  }
  const chunk = o[chunkField] ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunk) || (chunk as number) < 1 || (chunk as number) > MAX_BUFFER_LENGTH) {
    return invalid(chunkField, `${chunkField} ${valueText(chunk)} must be an integer from 1 to ${MAX_BUFFER_LENGTH}`);
  }
  const signal = o.signal;
  if (signal !== undefined && !isSignal(signal)) return invalid('signal', `signal must be an AbortSignal, not ${describe(signal)}`);
  return { start: start as number, end: (end as number) + 1, chunk: chunk as number, signal };
}

/** The error a read stream ends with when its signal aborts (or a reader cancels it). */
export function streamAborted(drive: StreamedDrive, offset: number, reason: unknown): BlockError {
  return new BlockError('ECANCELED', `read stream of drive ${drive.id} was aborted at offset ${offset}`, { node: drive.node.name, offset, cause: reason });
}
