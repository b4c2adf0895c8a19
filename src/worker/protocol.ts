// The messages between a page (or any thread) and a BlockLayer served in a worker: plain
// objects that survive structured cloning, with BlockErrors carried as their fields, since
// cloning keeps only an Error's name and message. Each postMessage carries an array of them.
import type { DriveEvents } from '../drive/events.js';
import { BlockError, type BlockErrorCode, type BlockErrorContext } from '../errors.js';

/** A call from the page to the worker; `id` pairs it with its reply, `abortable` asks for a signal the page may fire with a `cancel` call. */
export type WorkerCall = { abortable?: true } & (
  | { id: number; op: 'open'; options: unknown }
  | { id: number; op: 'read'; drive: number; offset: number; length: number; target?: Uint8Array; spare?: ArrayBuffer }
  | { id: number; op: 'write'; drive: number; offset: number; data: Uint8Array }
  | { id: number; op: 'write-zeroes' | 'discard' | 'block-status'; drive: number; offset: number; length: number }
  | { id: number; op: 'flush' | 'stats' | 'get-limits' | 'resume' | 'drain' | 'close'; drive: number }
  | { id: number; op: 'set-limits'; drive: number; limits: unknown; rules: { maxBurstLength?: number } }
  | { id: number; op: 'resize'; drive: number; size: number; shrink: boolean }
  | { id: number; op: 'block-status-map'; drive: number; offset: number; length: number }
  | { id: number; op: 'bitmap'; drive: number; method: BitmapMethod; name: string; options?: unknown; sources?: string[] }
  | { id: number; op: 'dirty-extents'; drive: number; name: string; offset: number; length: number | undefined; max: number }
  | { id: number; op: 'listen'; drive: number; event: keyof DriveEvents }
  | { id: number; op: 'cancel'; call: number; reason: unknown }
  | { id: number; op: 'close-layer' }
);

/** The dirty-bitmap calls of a Drive, by what they do. */
export type BitmapMethod = 'add' | 'remove' | 'clear' | 'enable' | 'disable' | 'merge' | 'list';

/** What the worker tells the page: a call's outcome, or an event of one of its drives. */
export type WorkerMessage =
  | { id: number; value?: unknown; error?: SerializedError }
  | { id: 0; drive: number; event: keyof DriveEvents; payload: unknown };

/** A BlockError (or any thrown value) as fields that survive structured cloning. */
export interface SerializedError {
  code: BlockErrorCode;
  message: string;
  context: Omit<BlockErrorContext, 'cause'>;
  /** The message of the error's cause, when it had one. */
  cause?: string;
}

/** What a drive looks like once opened in the worker: the fields its handle in the page keeps. */
export interface OpenedDrive {
  handle: number;
  id: string;
  nodeName: string;
  length: number;
  readOnly: boolean;
}

/** Buffers of read replies the page gave back, kept for the next replies (at most this many). */
export const MAX_SPARES = 64;

/** The id a drive's events carry: replies never use 0. */
export const EVENT_ID = 0;

export function serializeError(e: unknown): SerializedError {
  if (e instanceof BlockError) {
    const context: SerializedError['context'] = {};
    if (e.node !== undefined) context.node = e.node;
    if (e.path !== undefined) context.path = e.path;
    if (e.field !== undefined) context.field = e.field;
    if (e.offset !== undefined) context.offset = e.offset;
    if (e.length !== undefined) context.length = e.length;
    const out: SerializedError = { code: e.code, message: e.message, context };
    if (e.cause !== undefined) out.cause = e.cause instanceof Error ? e.cause.message : String(e.cause);
    return out;
  }
  return { code: 'EIO', message: e instanceof Error ? e.message : String(e), context: {} };
}

/** The BlockError again, in the page; the worker's cause survives as a message. */
export function deserializeError(s: SerializedError): BlockError {
  const context: BlockErrorContext = { ...s.context };
  if (s.cause !== undefined) context.cause = new Error(s.cause);
  return new BlockError(s.code, s.message, context);
}
