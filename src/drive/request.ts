// One request of a drive as a record: the same object carries it from the gate through the
// throttle queue and the node to the error policy, and goes back to a pool once settled.
import type { BlockError } from '../errors.js';
import { IoKind } from '../stats.js';
import type { QueuedRequest, Settle } from '../throttle/queue.js';

/** Name of an I/O operation, in events and errors. */
export type IoOperation = 'read' | 'write' | 'write-zeroes' | 'discard' | 'flush';

/** Per-request options. */
export interface RequestOptions {
  /** Aborting before the request reaches the driver rejects it with ECANCELED (its `cause` is `signal.reason`), untouched. */
  signal?: AbortSignal;
}

export const OP_READ = 0;
export const OP_WRITE = 1;
export const OP_WRITE_ZEROES = 2;
export const OP_DISCARD = 3;
export const OP_FLUSH = 4;
/** A request's operation; those up to OP_WRITE_ZEROES are throttled. */
export type Op = typeof OP_READ | typeof OP_WRITE | typeof OP_WRITE_ZEROES | typeof OP_DISCARD | typeof OP_FLUSH;
export const OP_NAMES: readonly IoOperation[] = ['read', 'write', 'write-zeroes', 'discard', 'flush'];
export const OP_KINDS: readonly IoKind[] = [IoKind.Read, IoKind.Write, IoKind.Write, IoKind.Unmap, IoKind.Flush];

/** What a request resolves with: the read buffer, or nothing. */
export type RequestValue = Uint8Array | undefined;

/** Where a request in the node ends: the request path (see request-path.ts). */
export interface RequestCompletion {
  /** The node finished the request: its value (or undefined once handed to `settle`). */
  completed(r: DriveRequest): RequestValue;
  /** The node failed the request: what the error policy makes of it. */
  failed(r: DriveRequest, e: unknown): RequestValue | Promise<RequestValue>;
}

/**
 * A request of a drive. Held (drained or paused drive), it keeps its caller's promise functions
 * and its abort listener; queued in the throttle, its fields are copied into the queue's columns
 * and the record goes back to the pool (a queued request costs no object); in the node, its two
 * continuations (made once per record) finish it; parked by a `stop` policy, it keeps its error.
 */
export class DriveRequest implements QueuedRequest {
  op: Op = OP_READ;
  offset = 0;
  /** Read target or write data; null for the other operations. */
  payload: Uint8Array | null = null;
  length = 0;
  /** Clock time when it passed the gate (its latency is counted from there). */
  start = 0;
  /** Arrival number (retries after a pause keep arrival order). */
  seq = 0;
  signal: AbortSignal | undefined = undefined;
  /** The caller's promise functions, while the drive holds the request or the queue has it. */
  resolve: Settle | null = null;
  reject: ((e: unknown) => void) | null = null;
  /** A request admitted from the throttle queue: the caller's resolve, settled by the continuation itself. */
  settle: Settle | null = null;
  /** The abort listener of a held request. */
  onAbort: (() => void) | undefined = undefined;
  /** A held request was aborted or let go (whichever came first). */
  settled = false;
  /** Why a parked request failed. */
  error: BlockError | null = null;

  readonly fulfilled: () => RequestValue;
  readonly rejected: (e: unknown) => RequestValue | Promise<RequestValue>;

  constructor(owner: RequestCompletion) {
    this.fulfilled = () => owner.completed(this);
    this.rejected = (e: unknown) => owner.failed(this, e);
  }
}

/** Records a drive keeps for reuse: enough for deep queues, bounded for drives that once had a burst. */
const MAX_POOLED = 256;

/** A drive's free request records. */
export class RequestPool {
  private readonly free: DriveRequest[] = [];

  constructor(private readonly owner: RequestCompletion) {}

  claim(op: Op, offset: number, payload: Uint8Array | null, length: number, signal: AbortSignal | undefined): DriveRequest {
    const r = this.free.pop() ?? new DriveRequest(this.owner);
    r.op = op;
    r.offset = offset;
    r.payload = payload;
    r.length = length;
    r.signal = signal;
    return r;
  }

  /** Gives a settled request back; it keeps nothing of its caller. */
  recycle(r: DriveRequest): void {
    r.payload = null;
    r.signal = undefined;
    r.resolve = r.reject = r.settle = null;
    r.onAbort = undefined;
    r.settled = false;
    r.error = null;
    if (this.free.length < MAX_POOLED) this.free.push(r);
  }
}
