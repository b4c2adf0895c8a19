import { EventEmitter } from 'eventemitter3';
import type { Clock } from './clock.js';
import { asBytes, describe, isSignal } from './drive/args.js';
import { type DriveReadableStreamOptions, driveReadableStream } from './drive/web-stream.js';
import { BlockError, fromErrno, valueText } from './errors.js';
import type { BlockStatus } from './node/driver.js';
import { mergedExtents } from './node/extents.js';
import type { BlockNode } from './node/node.js';
import type { ErrorAction } from './options/error-policy.js';
import { parseOptions } from './options/zod-error.js';
import { MAX_BUFFER_LENGTH } from './platform/buffer-limit.js';
import { type DriveStats, IoKind, StatsAccounting } from './stats.js';
import type { Direction } from './throttle/bucket.js';
import { DispatchOrder } from './throttle/dispatch-order.js';
import type { ThrottleGroup, ThrottleGroupRegistry } from './throttle/group.js';
import { isEnabled, type ThrottleOptions, throttleOptionsSchema, toConfig } from './throttle/limits.js';
import type { QueuedRequestSink, QueueListener, ThrottledRequestQueue, ThrottleQueueStats } from './throttle/queue.js';

/** What a drive needs from the layer that owns it. */
export interface DriveHost {
  readonly clock: Clock;
  readonly groups: ThrottleGroupRegistry;
  /** Called once when the drive has closed its queues, before its graph closes. */
  forget(drive: Drive): void;
}

/** A drive's limits and group, as returned by {@link Drive.getLimits}. */
export type DriveLimits = Omit<ThrottleOptions, 'group'> & { group: string };

/** Per-request options. */
export interface RequestOptions {
  /** Aborting before the request reaches the driver rejects it with ECANCELED (its `cause` is `signal.reason`), untouched. */
  signal?: AbortSignal;
}

/** Name of an I/O operation, in events and errors. */
export type IoOperation = 'read' | 'write' | 'write-zeroes' | 'discard' | 'flush';

export type { ErrorAction };

/** A drive's error policy: `rerror` for reads, `werror` for writes, write-zeroes, discard and flush. */
export interface ErrorPolicy {
  rerror?: ErrorAction;
  werror?: ErrorAction;
}

/** Payload of the `io-error` event (QEMU's BLOCK_IO_ERROR, plus the request). */
export interface IoErrorEvent {
  /** The drive's id (QEMU: device). */
  device: string;
  /** The root node's name (QEMU: node-name). */
  nodeName: string;
  operation: IoOperation;
  /** What the drive did: failed the request, completed it anyway, or held it and paused. */
  action: 'report' | 'ignore' | 'stop';
  /** The error was "no space left" (ENOSPC). */
  nospace: boolean;
  /** Human-readable reason (the error's message). */
  reason: string;
  offset: number;
  length: number;
  error: BlockError;
}

/** QEMU's io-status of a drive: `ok`, or why it paused. */
export type IoStatus = 'ok' | 'failed' | 'nospace';

/** Typed events of a Drive. Listening is optional; unobserved events cost nothing. */
export interface DriveEvents {
  /** A request reached the driver and failed (whatever the error policy did with it). */
  'io-error': (event: IoErrorEvent) => void;
  /** A failed request was held by a `stop` policy: the drive holds new requests until {@link Drive.resume}. */
  paused: (event: { reason: 'io-error'; ioStatus: IoStatus; error: BlockError }) => void;
  /** {@link Drive.resume} retried the held requests and let new ones go again. */
  resumed: (event: { retried: number }) => void;
  /** The drive started holding back requests because a limit was reached. */
  throttled: (event: { direction: 'read' | 'write'; queued: number }) => void;
  /** The drive's queues emptied again. */
  unthrottled: (event: { direction: 'read' | 'write'; delayedNs: number }) => void;
  /** The limits of the drive changed. */
  'limits-changed': (event: { group: string | null }) => void;
  /** The drive closed; every request has settled. */
  closed: () => void;
}

type State = 'open' | 'closing' | 'closed';

const READ_DIR = 0;
const WRITE_DIR = 1;
const DIRECTION_NAMES = ['read', 'write'] as const;

const OP_READ = 0;
const OP_WRITE = 1;
const OP_WRITE_ZEROES = 2;
const OP_DISCARD = 3;
const OP_FLUSH = 4;
type Op = typeof OP_READ | typeof OP_WRITE | typeof OP_WRITE_ZEROES | typeof OP_DISCARD | typeof OP_FLUSH;
const OP_NAMES: readonly IoOperation[] = ['read', 'write', 'write-zeroes', 'discard', 'flush'];
const OP_KINDS: readonly IoKind[] = [IoKind.Read, IoKind.Write, IoKind.Write, IoKind.Unmap, IoKind.Flush];

/** The largest buffer a read may allocate (Node's limit; larger reads are refused, not thrown). */
const MAX_READ_BUFFER = MAX_BUFFER_LENGTH;

/** A request that arrived while the drive was drained or paused: it goes, in order, when that ends. */
interface HeldRequest {
  op: Op;
  offset: number;
  payload: Uint8Array | null;
  length: number;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  settled: boolean;
  resolve: (value: Uint8Array | undefined | PromiseLike<Uint8Array | undefined>) => void;
  reject: (e: unknown) => void;
}

/** A request that failed under a `stop` policy: retried by resume(), failed by close(). */
interface ParkedRequest {
  op: Op;
  offset: number;
  payload: Uint8Array | null;
  length: number;
  start: number;
  seq: number;
  error: BlockError;
  resolve: (value: Uint8Array | undefined) => void;
  reject: (e: unknown) => void;
}

/** A request in the node: the fields its completion needs, and the callbacks given to the node's promise. */
interface InFlight {
  op: Op;
  offset: number;
  payload: Uint8Array | null;
  length: number;
  start: number;
  seq: number;
  /** The caller's resolve function of a request admitted from the throttle queue (settled directly); null for a direct request. */
  settle: ((value: Uint8Array | undefined | PromiseLike<Uint8Array | undefined>) => void) | null;
  readonly fulfilled: () => Uint8Array | undefined;
  readonly rejected: (e: unknown) => Uint8Array | undefined | Promise<Uint8Array | undefined>;
}

/**
 * The executor of a waiting request's promise, made once per drive: `set` stores the request,
 * the executor (called synchronously by `new Promise`) queues it with the promise's functions.
 */
class EnqueueExecutor {
  private queue: ThrottledRequestQueue | null = null;
  private direction: Direction = 0;
  private data: Uint8Array | number = 0;
  private offset = 0;
  private start = 0;
  private seq = 0;
  private signal: AbortSignal | undefined = undefined;

  set(queue: ThrottledRequestQueue, direction: Direction, data: Uint8Array | number, offset: number, start: number, seq: number, signal: AbortSignal | undefined): void {
    this.queue = queue;
    this.direction = direction;
    this.data = data;
    this.offset = offset;
    this.start = start;
    this.seq = seq;
    this.signal = signal;
  }

  readonly executor = (resolve: (value: Uint8Array | undefined | PromiseLike<Uint8Array | undefined>) => void, reject: (e: unknown) => void): void => {
    const { queue, direction, data, offset, start, seq, signal } = this;
    // Nothing of the request stays referenced here once it is queued.
    this.queue = null;
    this.data = 0;
    this.signal = undefined;
    queue!.enqueueRequest(direction, resolve, data, offset, start, seq, signal, reject);
  };
}

/** Continuations a drive keeps for reuse: enough for deep queues, bounded for drives that once had a burst. */
const MAX_POOLED = 256;

/**
 * The user's handle on a disk (QEMU: BlockBackend): bounds-checked I/O on the root node of a
 * graph, accounting, events, AbortSignal, throttling, error policies, drain/pause, close.
 */
export class Drive extends EventEmitter<DriveEvents> {
  /** Unique id within the owning layer. */
  readonly id: string;
  /** Root node of the drive's graph. */
  readonly node: BlockNode;
  /** Whether writes are refused. */
  readonly readOnly: boolean;
  protected readonly clock: Clock;
  private readonly accounting = new StatsAccounting();
  private state: State = 'open';
  /** Requests past the gate (throttle queue, driver), not yet settled. */
  private inFlight = 0;
  private idle: (() => void) | null = null;
  private closing: Promise<void> | null = null;
  /** Throttle queue; null while the drive has no limits. */
  private throttle: ThrottledRequestQueue | null = null;
  /** The group {@link throttle} belongs to (null with it). */
  private group: ThrottleGroup | null = null;
  private readonly host: DriveHost;
  private readonly order = new DispatchOrder();
  private readonly rerror: ErrorAction;
  private readonly werror: ErrorAction;
  /** Whether a failed request can be parked (a `stop` or `enospc` policy): only then is its arrival number kept while it is queued. */
  private readonly canPark: boolean;
  /** Arrival number of the next request (retries after a pause keep arrival order). */
  private seq = 0;
  /** Nested drain() calls in progress (QEMU drained sections). */
  private drains = 0;
  /** Lifts of the throttling in force ({@link liftThrottling}): a queue joined meanwhile is lifted as often. */
  private lifts = 0;
  /** A `stop` policy paused the drive. */
  private paused = false;
  /** True while drained or paused: new requests are held. */
  private holding = false;
  private held: HeldRequest[] = [];
  private parked: ParkedRequest[] = [];
  private status: IoStatus = 'ok';
  /** Free continuations for {@link run}. */
  private readonly pool: InFlight[] = [];
  private readonly queueListener: QueueListener = {
    // A queued request's run settles the caller's promise itself, in the same microtask as a
    // direct request's would: a request arriving right after an admission need not yield.
    released: () => {},
    throttled: (direction: Direction, queued: number) => {
      if (this.listenerCount('throttled') > 0) this.emit('throttled', { direction: DIRECTION_NAMES[direction], queued });
    },
    unthrottled: (direction: Direction, delayedNs: number) => {
      if (this.listenerCount('unthrottled') > 0) this.emit('unthrottled', { direction: DIRECTION_NAMES[direction], delayedNs });
    },
  };

  /** @internal drives are made by {@link BlockLayer.openDrive}. */
  constructor(id: string, node: BlockNode, host: DriveHost, policy: ErrorPolicy = {}) {
    super();
    this.id = id;
    this.node = node;
    this.host = host;
    this.clock = host.clock;
    this.readOnly = node.readOnly;
    this.rerror = policy.rerror ?? 'report';
    this.werror = policy.werror ?? 'report';
    this.canPark = this.rerror === 'stop' || this.rerror === 'enospc' || this.werror === 'stop' || this.werror === 'enospc';
  }

  /**
   * Sets the drive's I/O limits with QEMU's block_set_io_throttle semantics: the drive joins
   * `group` (default: a group named after the drive), or moves to it; the limits replace those
   * of the whole group and empty its buckets; limits that are all zero take the drive out of
   * throttling after its queue has drained. `{ group }` alone joins an existing group as it is.
   * `rules.maxBurstLength` widens the bound of the `*MaxLength` fields (default 2^32-1, QEMU's
   * option parsers; QMP's block_set_io_throttle takes any uint64 its other rules allow).
   */
  setLimits(options: ThrottleOptions, rules: { maxBurstLength?: number } = {}): void {
    if (this.state !== 'open') throw new BlockError('ECLOSED', `setLimits: drive ${this.id} is ${this.state}`);
    const { group: groupName, ...limits } = parseOptions(throttleOptionsSchema, options);
    const joinOnly = groupName !== undefined && Object.keys(limits).length === 0;
    const config = joinOnly ? null : toConfig(limits, '', rules);
    if (config !== null && !isEnabled(config)) {
      if (this.throttle !== null) {
        this.leaveGroup();
        this.emitLimitsChanged();
      }
      return;
    }
    const target = groupName ?? this.group?.name ?? this.id;
    let group = this.host.groups.get(target);
    if (joinOnly && group === undefined) {
      throw new BlockError('EINVAL', `group: throttle group '${target}' does not exist (give limits to create it)`, {
        field: 'group',
      });
    }
    group ??= this.host.groups.obtain(target);
    if (this.throttle !== null && this.group !== group) this.leaveGroup();
    if (this.throttle === null) {
      this.throttle = group.join(this.id);
      this.group = group;
      this.throttle.listener = this.queueListener;
      this.throttle.sink = this.queueSink;
      for (let i = 0; i < this.lifts; i++) this.throttle.lift();
    }
    if (config !== null) group.configureFrom(this.throttle, config);
    this.emitLimitsChanged();
  }

  /** The drive's limits and group, or null when it is not throttled. */
  getLimits(): DriveLimits | null {
    if (this.group === null) return null;
    return { ...this.group.getLimits(), group: this.group.name };
  }

  /** Takes the drive out of its throttle group (its queue drains first). */
  private leaveGroup(): void {
    const queue = this.throttle;
    const group = this.group;
    this.throttle = null;
    this.group = null;
    if (queue !== null) group!.leave(queue);
  }

  private emitLimitsChanged(): void {
    if (this.listenerCount('limits-changed') > 0) this.emit('limits-changed', { group: this.group?.name ?? null });
  }

  /** Size of the drive in bytes. */
  get length(): number {
    return this.node.length;
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.state !== 'open';
  }

  /**
   * Reads `length` bytes (into a new buffer) or fills the given buffer (a Uint8Array or Buffer;
   * an ArrayBuffer or DataView by its bytes), from `offset`.
   */
  read(offset: number, target: number | Uint8Array | ArrayBuffer | DataView, options?: RequestOptions): Promise<Uint8Array> {
    let buffer: Uint8Array | null = null;
    let length: number;
    if (typeof target === 'number') {
      length = target;
    } else {
      buffer = asBytes(target);
      if (buffer === null) return this.refuse(OP_READ, offset, -1, `target must be a Uint8Array, Buffer, ArrayBuffer or DataView, not ${describe(target)}`, 'target');
      length = buffer.length;
    }
    const signal = options?.signal;
    const refused = this.check(OP_READ, offset, length, signal);
    if (refused !== null) return Promise.reject(refused);
    if (buffer === null) {
      if (length > MAX_READ_BUFFER) return this.refuse(OP_READ, offset, length, `length ${length} is larger than the largest buffer (${MAX_READ_BUFFER} bytes); pass a smaller length`, 'length');
      buffer = Buffer.allocUnsafe(length);
    }
    return this.submit(OP_READ, offset, buffer, length, signal) as Promise<Uint8Array>;
  }

  /** Writes `data` (a Uint8Array or Buffer; an ArrayBuffer or DataView by its bytes) at `offset`. */
  write(offset: number, data: Uint8Array | ArrayBuffer | DataView, options?: RequestOptions): Promise<void> {
    const bytes = asBytes(data);
    if (bytes === null) return this.refuse(OP_WRITE, offset, -1, `data must be a Uint8Array, Buffer, ArrayBuffer or DataView, not ${describe(data)}`, 'data');
    const signal = options?.signal;
    const refused = this.check(OP_WRITE, offset, bytes.length, signal);
    if (refused !== null) return Promise.reject(refused);
    return this.submit(OP_WRITE, offset, bytes, bytes.length, signal) as Promise<void>;
  }

  /** Makes a range read as zeros (counted and throttled as a write, as in QEMU). */
  writeZeroes(offset: number, length: number, options?: RequestOptions): Promise<void> {
    return this.simple(OP_WRITE_ZEROES, offset, length, options);
  }

  /** Tells the storage a range is no longer used (not throttled, as in QEMU's drive path). */
  discard(offset: number, length: number, options?: RequestOptions): Promise<void> {
    return this.simple(OP_DISCARD, offset, length, options);
  }

  /** Makes completed writes durable (not throttled). */
  flush(options?: RequestOptions): Promise<void> {
    return this.simple(OP_FLUSH, 0, 0, options);
  }

  private simple(op: Op, offset: number, length: number, options: RequestOptions | undefined): Promise<void> {
    const signal = options?.signal;
    const refused = this.check(op, offset, length, signal);
    if (refused !== null) return Promise.reject(refused);
    return this.submit(op, offset, null, length, signal) as Promise<void>;
  }

  /**
   * Passes a checked request on: held while the drive is drained or paused; otherwise through
   * the throttle (reads, writes, write-zeroes), now or later as a queued request object.
   */
  private submit(op: Op, offset: number, payload: Uint8Array | null, length: number, signal: AbortSignal | undefined): Promise<Uint8Array | undefined> {
    if (this.holding) return this.hold(op, offset, payload, length, signal);
    this.inFlight++;
    const start = this.clock.now();
    const seq = this.seq++;
    const queue = this.throttle;
    if (op > OP_WRITE_ZEROES || queue === null || queue.tryAdmit(op === OP_READ ? READ_DIR : WRITE_DIR, length, start)) {
      // Requests just released from the queue settle a microtask later than a direct one would:
      // in that window a new request waits a tick too, so completions keep their order.
      if (this.order.pending) return Promise.resolve().then(() => this.run(op, offset, payload, length, start, seq));
      return this.run(op, offset, payload, length, start, seq);
    }
    // The request waits as a few columns of the queue: no object, no async frame, no inner
    // promise, and no executor closure either (the executor reads the request from fields).
    this.enqueueing.set(queue, op === OP_READ ? READ_DIR : WRITE_DIR, payload ?? length, offset, start, this.canPark ? seq : 0, signal);
    return new Promise(this.enqueueing.executor);
  }

  /** Hands a request that must wait to the throttle queue from inside `new Promise`, without a closure per request. */
  private readonly enqueueing = new EnqueueExecutor();

  /** Sends a held request on like {@link submit}, settling the caller's promise directly (no extra hop that would reorder completions). */
  private release(h: HeldRequest): void {
    this.inFlight++;
    const start = this.clock.now();
    const seq = this.seq++;
    const queue = this.throttle;
    const { op, offset, payload, length } = h;
    if (op > OP_WRITE_ZEROES || queue === null || queue.tryAdmit(op === OP_READ ? READ_DIR : WRITE_DIR, length, start)) {
      // It settles a microtask later than a direct request: new ones in this tick yield too.
      this.order.released();
      this.run(op, offset, payload, length, start, seq).then(h.resolve, h.reject);
      return;
    }
    queue.enqueueRequest(op === OP_READ ? READ_DIR : WRITE_DIR, h.resolve, payload ?? length, offset, start, this.canPark ? seq : 0, h.signal, h.reject);
  }

  /** Receives the drive's queued requests from its throttle queue. */
  private readonly queueSink: QueuedRequestSink = {
    admitQueued: (direction, settle, data, offset, start, seqLow, signal, reject) => {
      const op = direction === READ_DIR ? OP_READ : typeof data === 'number' ? OP_WRITE_ZEROES : OP_WRITE;
      if (signal?.aborted) {
        this.leave();
        reject!(this.canceled(OP_NAMES[op], offset, signal.reason));
        return;
      }
      // The queue keeps the low 32 bits of the arrival number (fewer than 2^32 requests arrive
      // while one waits), and only for a drive that can park requests (the only use of it).
      const seq = this.canPark ? this.seq - ((this.seq - seqLow) >>> 0) : 0;
      const payload = typeof data === 'number' ? null : data;
      const length = typeof data === 'number' ? data : data.length;
      // The run settles the caller's promise itself (a failure by resolving it with a rejected
      // promise): no promise of the run's own, no reject function kept per queued request.
      this.runQueued(op, offset, payload, length, start, seq, settle);
    },
    cancelQueued: (reject, error) => {
      this.leave();
      reject(error);
    },
  };

  /**
   * Sends a request to the node and accounts it; applies the error policy on failure; settles
   * once. The caller's promise is the one `then` derives from the node's: no async frame, no
   * closure per request (the continuation is a pooled {@link InFlight}), and it settles in the
   * same microtask as `await node.read(); return …` in an async function would.
   */
  private run(op: Op, offset: number, payload: Uint8Array | null, length: number, start: number, seq: number): Promise<Uint8Array | undefined> {
    const r = this.inFlightFor(op, offset, payload, length, start, seq, null);
    let io: Promise<void>;
    try {
      io = this.send(op, offset, payload, length);
    } catch (e) {
      // A driver that threw instead of rejecting: handled at once, as the catch of an async function would.
      try {
        const value = r.rejected(e);
        return new Promise((resolve) => resolve(value));
      } catch (error) {
        return Promise.reject(error);
      }
    }
    // Promise.resolve adopts a native promise as is (a foreign thenable costs the same hop as await).
    return Promise.resolve(io).then(r.fulfilled, r.rejected);
  }

  /** {@link run} for a request admitted from the throttle queue: the continuation settles the caller's promise through `settle`. */
  private runQueued(
    op: Op,
    offset: number,
    payload: Uint8Array | null,
    length: number,
    start: number,
    seq: number,
    settle: (value: Uint8Array | undefined | PromiseLike<Uint8Array | undefined>) => void,
  ): void {
    const r = this.inFlightFor(op, offset, payload, length, start, seq, settle);
    let io: Promise<void>;
    try {
      io = this.send(op, offset, payload, length);
    } catch (e) {
      io = Promise.reject(e);
    }
    void Promise.resolve(io).then(r.fulfilled, r.rejected);
  }

  private inFlightFor(
    op: Op,
    offset: number,
    payload: Uint8Array | null,
    length: number,
    start: number,
    seq: number,
    settle: InFlight['settle'],
  ): InFlight {
    const r = this.pool.pop() ?? this.newInFlight();
    r.op = op;
    r.offset = offset;
    r.payload = payload;
    r.length = length;
    r.start = start;
    r.seq = seq;
    r.settle = settle;
    return r;
  }

  /** The node's promise for a request (a driver may throw instead of rejecting: the caller handles both). */
  private send(op: Op, offset: number, payload: Uint8Array | null, length: number): Promise<void> {
    if (op === OP_READ) return this.node.read(offset, payload!);
    if (op === OP_WRITE) return this.node.write(offset, payload!);
    if (op === OP_WRITE_ZEROES) return this.node.writeZeroes(offset, length);
    if (op === OP_DISCARD) return this.node.discard(offset, length);
    return this.node.flush();
  }

  /** A pooled continuation; its two callbacks are made once, for every request it will carry. */
  private newInFlight(): InFlight {
    const r: InFlight = {
      op: OP_READ,
      offset: 0,
      payload: null,
      length: 0,
      start: 0,
      seq: 0,
      settle: null,
      fulfilled: () => {
        const { op, offset, payload, length, start, settle } = r;
        this.recycle(r);
        this.done(op, offset, length, start);
        this.leave();
        const value = op === OP_READ ? payload! : undefined;
        if (settle === null) return value;
        settle(value);
        return undefined;
      },
      rejected: (e: unknown) => {
        const { op, offset, payload, length, start, seq, settle } = r;
        this.recycle(r);
        if (settle === null) return this.failed(op, offset, payload, length, start, seq, e);
        try {
          settle(this.failed(op, offset, payload, length, start, seq, e));
        } catch (error) {
          settle(Promise.reject(error));
        }
        return undefined;
      },
    };
    return r;
  }

  private recycle(r: InFlight): void {
    r.payload = null;
    r.settle = null;
    if (this.pool.length < MAX_POOLED) this.pool.push(r);
  }

  /** A request failed in the node: the error policy decides (report: throw; ignore: complete; stop: park). */
  private failed(op: Op, offset: number, payload: Uint8Array | null, length: number, start: number, seq: number, e: unknown): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    const error = fromErrno(e, `${OP_NAMES[op]} at offset ${offset}`, { node: this.node.name, offset, length });
    const action = error.code === 'ECANCELED' ? 'report' : this.actionFor(op, error);
    if (action === 'report') this.accounting.failedOp(OP_KINDS[op], start, this.clock.now());
    if (error.code !== 'ECANCELED') this.emitIoError(op, offset, length, error, action);
    if (action !== 'ignore') {
      this.leave();
      if (action === 'stop') return this.park({ op, offset, payload, length, start, seq, error, resolve: undefined!, reject: undefined! });
      throw error;
    }
    // 'ignore': the request completes as if it had succeeded (QEMU's rerror/werror=ignore).
    this.done(op, offset, length, start);
    this.leave();
    return op === OP_READ ? payload! : undefined;
  }

  private done(op: Op, offset: number, length: number, start: number): void {
    if (op === OP_WRITE || op === OP_WRITE_ZEROES) this.accounting.wrote(offset + length);
    this.accounting.done(OP_KINDS[op], length, start, this.clock.now());
  }

  private actionFor(op: Op, error: BlockError): 'report' | 'ignore' | 'stop' {
    const policy = op === OP_READ ? this.rerror : this.werror;
    if (policy === 'enospc') return error.code === 'ENOSPC' ? 'stop' : 'report';
    return policy;
  }

  private emitIoError(op: Op, offset: number, length: number, error: BlockError, action: 'report' | 'ignore' | 'stop'): void {
    if (this.listenerCount('io-error') === 0) return;
    this.emit('io-error', {
      device: this.id,
      nodeName: this.node.name,
      operation: OP_NAMES[op],
      action,
      nospace: error.code === 'ENOSPC',
      reason: error.message,
      offset,
      length,
      error,
    });
  }

  /** Holds a failed request under a `stop` policy and pauses the drive (QEMU: the VM stops on an I/O error). */
  private park(p: ParkedRequest): Promise<Uint8Array | undefined> {
    return new Promise((resolve, reject) => {
      p.resolve = resolve;
      p.reject = reject;
      this.parked.push(p);
      if (this.paused) return;
      this.paused = true;
      this.status = p.error.code === 'ENOSPC' ? 'nospace' : 'failed';
      this.updateHolding();
      if (this.listenerCount('paused') > 0) this.emit('paused', { reason: 'io-error', ioStatus: this.status, error: p.error });
    });
  }

  /** Whether a `stop` error policy has paused the drive (held requests wait for {@link resume}). */
  get isPaused(): boolean {
    return this.paused;
  }

  /** QEMU's io-status: `ok`, or `failed` / `nospace` while paused by an error. */
  get ioStatus(): IoStatus {
    return this.status;
  }

  /**
   * After a `stop` error policy paused the drive (QEMU's `cont`): retries the failed requests
   * in their order of arrival, then lets the requests that arrived meanwhile go, in order.
   * Does nothing when the drive is not paused.
   */
  resume(): void {
    if (!this.paused) return;
    const parked = this.parked.sort((a, b) => a.seq - b.seq);
    this.parked = [];
    this.paused = false;
    this.status = 'ok';
    // Retries go first, synchronously, so they reach the driver before anything held.
    if (parked.length > 0) this.order.released();
    for (const p of parked) {
      this.inFlight++;
      this.run(p.op, p.offset, p.payload, p.length, p.start, p.seq).then(p.resolve, p.reject);
    }
    this.updateHolding();
    if (this.listenerCount('resumed') > 0) this.emit('resumed', { retried: parked.length });
  }

  private hold(op: Op, offset: number, payload: Uint8Array | null, length: number, signal: AbortSignal | undefined): Promise<Uint8Array | undefined> {
    return new Promise((resolve, reject) => {
      const h: HeldRequest = { op, offset, payload, length, signal, onAbort: undefined, settled: false, resolve, reject };
      if (signal) {
        h.onAbort = () => {
          if (h.settled) return;
          h.settled = true;
          const at = this.held.indexOf(h);
          if (at >= 0) this.held.splice(at, 1);
          reject(this.canceled(OP_NAMES[op], offset, signal.reason));
        };
        signal.addEventListener('abort', h.onAbort, { once: true });
      }
      this.held.push(h);
    });
  }

  /** Recomputes whether new requests are held; when that ends, lets the held ones go in order. */
  private updateHolding(): void {
    this.holding = this.drains > 0 || this.paused;
    while (!this.holding && this.held.length > 0) {
      const batch = this.held;
      this.held = [];
      for (let i = 0; i < batch.length; i++) {
        const h = batch[i];
        if (h.settled) continue;
        if (this.holding) {
          this.held.push(h); // held again meanwhile: the rest keep their order
          continue;
        }
        h.settled = true;
        if (h.onAbort) h.signal!.removeEventListener('abort', h.onAbort);
        this.release(h);
      }
    }
  }

  /** Status of the extent starting at `offset` (data / zero / allocated, and which node). */
  blockStatus(offset: number, length: number): Promise<BlockStatus> {
    if (this.state !== 'open') return Promise.reject(this.closedError('block-status', offset));
    const refused = this.rangeError('block-status', offset, length);
    if (refused !== null) return Promise.reject(refused);
    return this.node.blockStatus(offset, length);
  }

  /** Every extent of a range (default: the whole drive), like `qemu-img map`. */
  blockStatusMap(offset = 0, length = this.length - offset): Promise<BlockStatus[]> {
    if (this.state !== 'open') return Promise.reject(this.closedError('block-status', offset));
    const refused = this.rangeError('block-status', offset, length);
    if (refused !== null) return Promise.reject(refused);
    try {
      return this.node.blockStatusMap(offset, length);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * The extents {@link blockStatusMap} gives, one at a time as a `for await` loop asks for them,
   * without building the array; `break` stops reading. The arguments are checked when this is
   * called: a bad one (EINVAL naming it), a closed drive (ECLOSED) or an aborted signal make the
   * first `next()` reject. The signal is looked at between calls to the driver (ECANCELED, with
   * its reason as `cause`).
   */
  blockStatusExtents(offset = 0, length = this.length - offset, options?: RequestOptions): AsyncIterableIterator<BlockStatus> {
    const signal = options?.signal;
    let refused = this.state !== 'open' ? this.closedError('block-status', offset) : this.rangeError('block-status', offset, length);
    if (refused === null && signal !== undefined && !isSignal(signal)) {
      refused = new BlockError('EINVAL', `block-status: signal must be an AbortSignal, not ${describe(signal)}`, { node: this.node.name, offset, length, field: 'signal' });
    }
    return mergedExtents(this, offset, length, refused === null ? signal : undefined, this.node.name, refused);
  }

  /**
   * The drive's guest view (bytes `start` to `end`, inclusive) as a WHATWG ReadableStream read
   * as it is consumed: see {@link driveReadableStream}. In Node, `createReadStream` gives a Node Readable.
   */
  readableStream(options?: DriveReadableStreamOptions): ReadableStream<Uint8Array> {
    return driveReadableStream(this, options);
  }

  /** QEMU query-blockstats counters, plus throttle figures when throttled. */
  stats(): DriveStats & { throttle?: ThrottleQueueStats } {
    const s: DriveStats & { throttle?: ThrottleQueueStats } = this.accounting.snapshot(
      this.clock.now(),
      this.inFlight + this.held.length + this.parked.length,
    );
    if (this.throttle !== null) s.throttle = this.throttle.stats();
    return s;
  }

  /**
   * A drained section (QEMU's bdrv_drained_begin/end): lets every queued request go now,
   * ignoring limits (still accounted), and waits until none of them is in flight. Requests
   * that arrive meanwhile are held and go, in order, when the drain ends, so a drain takes
   * only as long as what was in flight when it began.
   */
  async drain(): Promise<void> {
    this.drains++;
    this.updateHolding();
    let drainEnd: (() => void) | undefined;
    try {
      this.throttle?.drain();
      // Throttle filters below stay drained for the section: what the drive's queue lets go now reaches them later.
      drainEnd = this.node.drainBegin();
      await this.whenIdle();
    } finally {
      drainEnd?.();
      this.drains--;
      this.updateHolding();
    }
  }

  /**
   * Lifts the drive's throttling until the returned function is called (QEMU: a drained section
   * of a BlockBackend that does not queue requests, as an NBD export's): every queued request
   * goes now and requests arriving meanwhile go at once, all still accounted and charged to the
   * group; the group's other members keep their limits. Unlike {@link drain} nothing is held:
   * this is for an owner that stops its own sources of requests and waits for those in flight
   * (NbdServer.close() and removeExport()). Throttle filter nodes in the graph are lifted too
   * (a drained section of the graph). Calls nest; each returned function ends its own lift, once.
   */
  liftThrottling(): () => void {
    this.throttle?.lift();
    this.lifts++;
    let drainEnd: () => void;
    try {
      drainEnd = this.node.drainBegin();
    } catch (e) {
      this.lifts--;
      this.throttle?.unlift();
      throw e;
    }
    let lifted = true;
    return () => {
      if (!lifted) return;
      lifted = false;
      this.lifts--;
      this.throttle?.unlift();
      drainEnd();
    };
  }

  /**
   * Stops accepting requests, lets every accepted one finish (queued and held ones included),
   * fails requests held by a `stop` error policy with their error, closes the graph.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.state = 'closing';
    this.closing = (async () => {
      try {
        // Requests held by a drain are released when it ends: drain until none is left.
        for (;;) {
          await this.drain();
          if (this.paused) {
            this.failPaused();
            break;
          }
          if (this.inFlight === 0 && this.held.length === 0) break;
        }
        this.leaveGroup();
        this.host.forget(this);
        await this.node.unref();
      } finally {
        this.state = 'closed';
        this.emit('closed');
      }
    })();
    return this.closing;
  }

  /** Closing a paused drive: the failed requests fail with their error, the held ones with ECLOSED. */
  private failPaused(): void {
    const parked = this.parked.sort((a, b) => a.seq - b.seq);
    const held = this.held;
    this.parked = [];
    this.held = [];
    this.paused = false;
    this.holding = this.drains > 0;
    for (const p of parked) {
      this.accounting.failedOp(OP_KINDS[p.op], p.start, this.clock.now());
      p.reject(p.error);
    }
    for (const h of held) {
      if (h.settled) continue;
      h.settled = true;
      if (h.onAbort) h.signal!.removeEventListener('abort', h.onAbort);
      h.reject(new BlockError('ECLOSED', `${OP_NAMES[h.op]}: drive ${this.id} was closed while paused by an I/O error`, { node: this.node.name, offset: h.offset }));
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Resolves when no request is in flight (held and paused ones are not in flight). */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.idle;
      this.idle = () => {
        previous?.();
        resolve();
      };
    });
  }

  private closedError(op: IoOperation | 'block-status', offset: number): BlockError {
    return new BlockError('ECLOSED', `${op}: drive ${this.id} is ${this.state}`, { node: this.node.name, offset });
  }

  /** Refuses a request before it counts (counted as invalid, as QEMU's invalid_*_operations). */
  private refuse(op: Op, offset: number, length: number, detail: string, field: string): Promise<never> {
    this.accounting.invalidOp(OP_KINDS[op]);
    return Promise.reject(
      new BlockError('EINVAL', `${OP_NAMES[op]}: ${detail}`, { node: this.node.name, offset, ...(length >= 0 ? { length } : {}), field }),
    );
  }

  /** Checks a request before it counts as in flight: the error to reject with, or null. */
  private check(op: Op, offset: number, length: number, signal: unknown): BlockError | null {
    // The common case in a few comparisons, with nothing allocated; the slow path says what is wrong.
    if (
      this.state === 'open' &&
      Number.isSafeInteger(offset) &&
      offset >= 0 &&
      Number.isSafeInteger(length) &&
      length >= 0 &&
      offset + length <= this.node.length &&
      (op === OP_READ || op === OP_FLUSH || !this.readOnly)
    ) {
      if (signal === undefined) return null;
      if (isSignal(signal)) return signal.aborted ? this.canceled(OP_NAMES[op], offset, signal.reason) : null;
    }
    return this.refusal(op, offset, length, signal);
  }

  /** Why {@link check} refused a request (counted as invalid unless the drive is closed or the signal aborted). */
  private refusal(op: Op, offset: number, length: number, signal: unknown): BlockError | null {
    const name = OP_NAMES[op];
    if (this.state !== 'open') return this.closedError(name, offset);
    const context = { node: this.node.name, offset, length };
    let error = this.rangeError(name, offset, length);
    if (error === null && this.readOnly && op !== OP_READ && op !== OP_FLUSH) {
      error = new BlockError('EROFS', `${name}: drive ${this.id} is read-only`, context);
    } else if (error === null && signal !== undefined && !isSignal(signal)) {
      error = new BlockError('EINVAL', `${name}: signal must be an AbortSignal, not ${describe(signal)}`, { ...context, field: 'signal' });
    }
    if (error !== null) {
      this.accounting.invalidOp(OP_KINDS[op]);
      return error;
    }
    if ((signal as AbortSignal | undefined)?.aborted) return this.canceled(name, offset, (signal as AbortSignal).reason);
    return null;
  }

  /**
   * The one range check of every entry point that takes a range (requests and block status):
   * EINVAL naming the bad field (`offset` or `length`) with the value as the caller gave it,
   * or null when [offset, offset+length) lies inside the drive. Never throws, whatever the values.
   */
  private rangeError(name: string, offset: unknown, length: unknown): BlockError | null {
    const size = this.node.length;
    const context = { node: this.node.name, ...(typeof offset === 'number' ? { offset } : {}), ...(typeof length === 'number' ? { length } : {}) };
    if (!Number.isSafeInteger(offset) || (offset as number) < 0) {
      return new BlockError('EINVAL', `${name}: offset ${valueText(offset)} must be a non-negative safe integer`, { ...context, field: 'offset' });
    }
    if (!Number.isSafeInteger(length) || (length as number) < 0) {
      return new BlockError('EINVAL', `${name}: length ${valueText(length)} must be a non-negative safe integer`, { ...context, field: 'length' });
    }
    if ((offset as number) + (length as number) > size) {
      const field = (offset as number) > size ? 'offset' : 'length';
      return new BlockError('EINVAL', `${name}: range ${offset}+${length} is beyond the end of drive ${this.id} (${size} bytes)`, { ...context, field });
    }
    return null;
  }

  private leave(): void {
    if (--this.inFlight === 0 && this.idle !== null) {
      const idle = this.idle;
      this.idle = null;
      idle();
    }
  }

  /** ECANCELED for a request whose signal aborted; `reason` (the signal's) becomes the error's `cause`. */
  private canceled(op: IoOperation, offset: number, reason: unknown): BlockError {
    return new BlockError('ECANCELED', `${op}: request at offset ${offset} was aborted`, { node: this.node.name, offset, cause: reason });
  }
}
