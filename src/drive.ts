import { EventEmitter } from 'eventemitter3';
import type { Clock } from './clock.js';
import { BlockError, fromErrno } from './errors.js';
import type { BlockStatus } from './node/driver.js';
import type { BlockNode } from './node/node.js';
import { type DriveStats, IoKind, StatsAccounting } from './stats.js';
import { parseOptions } from './options/zod-error.js';
import type { Direction } from './throttle/bucket.js';
import type { ThrottleGroupRegistry } from './throttle/group.js';
import { isEnabled, type ThrottleOptions, throttleOptionsSchema, toConfig } from './throttle/limits.js';
import { DispatchOrder } from './throttle/dispatch-order.js';
import type { QueueListener, ThrottledRequestQueue, ThrottleQueueStats, Waiter } from './throttle/queue.js';

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
  /** Aborting before the request reaches the driver rejects it with ECANCELED, untouched. */
  signal?: AbortSignal;
}

/** Name of an I/O operation, in events and errors. */
export type IoOperation = 'read' | 'write' | 'write-zeroes' | 'discard' | 'flush';

/** Payload of the `io-error` event. */
export interface IoErrorEvent {
  operation: IoOperation;
  offset: number;
  length: number;
  error: BlockError;
}

/** Typed events of a Drive. Listening is optional; unobserved events cost nothing. */
export interface DriveEvents {
  /** A request reached the driver and failed. */
  'io-error': (event: IoErrorEvent) => void;
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
type Op = typeof OP_READ | typeof OP_WRITE | typeof OP_WRITE_ZEROES;
const OP_NAMES: Record<Op, IoOperation> = { 0: 'read', 1: 'write', 2: 'write-zeroes' };

/** A request waiting in the drive's throttle queue: it is its own queue entry. */
class QueuedRequest implements Waiter {
  enqueuedAt = 0;
  onAbort: (() => void) | undefined = undefined;
  prev: Waiter | null = null;
  next: Waiter | null = null;
  constructor(
    readonly drive: Drive,
    readonly op: Op,
    readonly offset: number,
    readonly payload: Uint8Array | null,
    readonly bytes: number,
    readonly start: number,
    readonly signal: AbortSignal | undefined,
    readonly resolve: (value: Uint8Array | undefined) => void,
    readonly reject: (e: unknown) => void,
  ) {}
  admit(): void {
    this.drive.dispatch(this);
  }
  cancel(error: BlockError): void {
    this.drive.dropped(this, error);
  }
}

/**
 * The user's handle on a disk (QEMU: BlockBackend): bounds-checked I/O on the root node of a
 * graph, accounting, events, AbortSignal, throttling, close/drain.
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
  private inFlight = 0;
  private idle: (() => void) | null = null;
  private closing: Promise<void> | null = null;
  /** Throttle queue; null while the drive has no limits. */
  private throttle: ThrottledRequestQueue | null = null;
  private readonly host: DriveHost;
  private readonly order = new DispatchOrder();
  private readonly queueListener: QueueListener = {
    released: () => this.order.released(),
    throttled: (direction: Direction, queued: number) => {
      if (this.listenerCount('throttled') > 0) this.emit('throttled', { direction: DIRECTION_NAMES[direction], queued });
    },
    unthrottled: (direction: Direction, delayedNs: number) => {
      if (this.listenerCount('unthrottled') > 0) this.emit('unthrottled', { direction: DIRECTION_NAMES[direction], delayedNs });
    },
  };

  /** @internal drives are made by {@link BlockLayer.openDrive}. */
  constructor(id: string, node: BlockNode, host: DriveHost) {
    super();
    this.id = id;
    this.node = node;
    this.host = host;
    this.clock = host.clock;
    this.readOnly = node.readOnly;
  }

  /**
   * Sets the drive's I/O limits with QEMU's block_set_io_throttle semantics: the drive joins
   * `group` (default: a group named after the drive), or moves to it; the limits replace those
   * of the whole group and empty its buckets; limits that are all zero take the drive out of
   * throttling after its queue has drained. `{ group }` alone joins an existing group as it is.
   */
  setLimits(options: ThrottleOptions): void {
    if (this.state !== 'open') throw new BlockError('ECLOSED', `setLimits: drive ${this.id} is ${this.state}`);
    const { group: groupName, ...limits } = parseOptions(throttleOptionsSchema, options);
    const joinOnly = groupName !== undefined && Object.keys(limits).length === 0;
    const config = joinOnly ? null : toConfig(limits);
    if (config !== null && !isEnabled(config)) {
      if (this.throttle !== null) {
        const queue = this.throttle;
        this.throttle = null;
        queue.group.leave(queue);
        this.emitLimitsChanged();
      }
      return;
    }
    const target = groupName ?? this.throttle?.group.name ?? this.id;
    let group = this.host.groups.get(target);
    if (joinOnly && group === undefined) {
      throw new BlockError('EINVAL', `group: throttle group '${target}' does not exist (give limits to create it)`, {
        field: 'group',
      });
    }
    group ??= this.host.groups.obtain(target);
    if (this.throttle !== null && this.throttle.group !== group) {
      const old = this.throttle;
      this.throttle = null;
      old.group.leave(old);
    }
    if (this.throttle === null) {
      this.throttle = group.join(this.id);
      this.throttle.listener = this.queueListener;
    }
    if (config !== null) group.configureFrom(this.throttle, config);
    this.emitLimitsChanged();
  }

  /** The drive's limits and group, or null when it is not throttled. */
  getLimits(): DriveLimits | null {
    if (this.throttle === null) return null;
    return { ...this.throttle.group.getLimits(), group: this.throttle.group.name };
  }

  private emitLimitsChanged(): void {
    if (this.listenerCount('limits-changed') > 0) this.emit('limits-changed', { group: this.throttle?.group.name ?? null });
  }

  /** Size of the drive in bytes. */
  get length(): number {
    return this.node.length;
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.state !== 'open';
  }

  /** Reads `length` bytes (into a new buffer) or fills the given buffer, from `offset`. */
  read(offset: number, target: number | Uint8Array, options?: RequestOptions): Promise<Uint8Array> {
    const length = typeof target === 'number' ? target : target.length;
    try {
      this.enter(IoKind.Read, 'read', offset, length, options?.signal);
    } catch (e) {
      return Promise.reject(e);
    }
    const buffer = typeof target === 'number' ? Buffer.allocUnsafe(length) : target;
    return this.submit(OP_READ, offset, buffer, length, options?.signal) as Promise<Uint8Array>;
  }

  /** Writes `data` at `offset`. */
  write(offset: number, data: Uint8Array, options?: RequestOptions): Promise<void> {
    try {
      this.enter(IoKind.Write, 'write', offset, data.length, options?.signal);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.submit(OP_WRITE, offset, data, data.length, options?.signal) as Promise<void>;
  }

  /** Makes a range read as zeros (counted and throttled as a write, as in QEMU). */
  writeZeroes(offset: number, length: number, options?: RequestOptions): Promise<void> {
    try {
      this.enter(IoKind.Write, 'write-zeroes', offset, length, options?.signal);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.submit(OP_WRITE_ZEROES, offset, null, length, options?.signal) as Promise<void>;
  }

  /** Passes a checked request through the throttle: now, or later as a queued request object. */
  private submit(op: Op, offset: number, payload: Uint8Array | null, length: number, signal: AbortSignal | undefined): Promise<Uint8Array | undefined> {
    const start = this.clock.now();
    const queue = this.throttle;
    if (queue === null || queue.tryAdmit(op === OP_READ ? READ_DIR : WRITE_DIR, length)) {
      // Requests just released from the queue settle a microtask later than a direct one would:
      // in that window a new request waits a tick too, so completions keep their order.
      if (this.order.pending) return Promise.resolve().then(() => this.run(op, offset, payload, length, start));
      return this.run(op, offset, payload, length, start);
    }
    // The request object itself waits in the queue: no async frame, no inner promise.
    return new Promise((resolve, reject) => {
      queue.enqueueWaiter(op === OP_READ ? READ_DIR : WRITE_DIR, new QueuedRequest(this, op, offset, payload, length, start, signal, resolve, reject));
    });
  }

  /** @internal A queued request was admitted: send it down now. */
  dispatch(r: QueuedRequest): void {
    if (r.signal?.aborted) {
      this.leave();
      r.reject(this.canceled(OP_NAMES[r.op], r.offset));
      return;
    }
    this.run(r.op, r.offset, r.payload, r.bytes, r.start).then(r.resolve, r.reject);
  }

  /** @internal A queued request was aborted before it reached the driver. */
  dropped(r: QueuedRequest, error: BlockError): void {
    this.leave();
    r.reject(error);
  }

  /** Sends a request to the node and accounts it; settles once. */
  private async run(op: Op, offset: number, payload: Uint8Array | null, length: number, start: number): Promise<Uint8Array | undefined> {
    try {
      if (op === OP_READ) await this.node.read(offset, payload!);
      else if (op === OP_WRITE) await this.node.write(offset, payload!);
      else await this.node.writeZeroes(offset, length);
      if (op === OP_READ) {
        this.accounting.done(IoKind.Read, length, start, this.clock.now());
        return payload!;
      }
      this.accounting.wrote(offset + length);
      this.accounting.done(IoKind.Write, length, start, this.clock.now());
      return undefined;
    } catch (e) {
      throw this.failed(op === OP_READ ? IoKind.Read : IoKind.Write, OP_NAMES[op], offset, length, start, e);
    } finally {
      this.leave();
    }
  }

  /** Tells the storage a range is no longer used (not throttled, as in QEMU's drive path). */
  async discard(offset: number, length: number, options?: RequestOptions): Promise<void> {
    this.enter(IoKind.Unmap, 'discard', offset, length, options?.signal);
    const start = this.clock.now();
    try {
      await this.node.discard(offset, length);
      this.accounting.done(IoKind.Unmap, length, start, this.clock.now());
    } catch (e) {
      throw this.failed(IoKind.Unmap, 'discard', offset, length, start, e);
    } finally {
      this.leave();
    }
  }

  /** Makes completed writes durable (not throttled). */
  async flush(options?: RequestOptions): Promise<void> {
    this.enter(IoKind.Flush, 'flush', 0, 0, options?.signal);
    const start = this.clock.now();
    try {
      await this.node.flush();
      this.accounting.done(IoKind.Flush, 0, start, this.clock.now());
    } catch (e) {
      throw this.failed(IoKind.Flush, 'flush', 0, 0, start, e);
    } finally {
      this.leave();
    }
  }

  /** Allocation status of the extent starting at `offset` (data / zero / allocated, and which node). */
  blockStatus(offset: number, length: number): Promise<BlockStatus> {
    this.assertOpen('block-status', offset);
    return this.node.blockStatus(offset, length);
  }

  /** Every extent of a range (default: the whole drive), like `qemu-img map`. */
  blockStatusMap(offset = 0, length = this.length - offset): Promise<BlockStatus[]> {
    this.assertOpen('block-status', offset);
    return this.node.blockStatusMap(offset, length);
  }

  /** QEMU query-blockstats counters, plus throttle figures when throttled. */
  stats(): DriveStats & { throttle?: ThrottleQueueStats } {
    const s: DriveStats & { throttle?: ThrottleQueueStats } = this.accounting.snapshot(
      this.clock.now(),
      this.inFlight,
    );
    if (this.throttle !== null) s.throttle = this.throttle.stats();
    return s;
  }

  /** Lets every queued request go now, ignoring limits (still accounted), and waits until none is in flight. */
  async drain(): Promise<void> {
    this.throttle?.drain();
    this.node.drain();
    await this.whenIdle();
  }

  /** Stops accepting requests, drains queued ones, waits for all to settle, closes the graph. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.state = 'closing';
    this.closing = (async () => {
      try {
        await this.drain();
        if (this.throttle !== null) {
          const queue = this.throttle;
          this.throttle = null;
          queue.group.leave(queue);
        }
        this.host.forget(this);
        await this.node.unref();
      } finally {
        this.state = 'closed';
        this.emit('closed');
      }
    })();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Resolves when no request is in flight. */
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

  private assertOpen(op: IoOperation | 'block-status', offset: number): void {
    if (this.state !== 'open') {
      throw new BlockError('ECLOSED', `${op}: drive ${this.id} is ${this.state}`, { node: this.node.name, offset });
    }
  }

  /** Checks a request before it counts as in flight; refused ones count as invalid. */
  private enter(kind: IoKind, op: IoOperation, offset: number, length: number, signal: AbortSignal | undefined): void {
    this.assertOpen(op, offset);
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      this.accounting.invalidOp(kind);
      throw new BlockError('EINVAL', `${op}: offset ${offset} and length ${length} must be non-negative safe integers`, {
        node: this.node.name,
        offset,
        length,
      });
    }
    if (offset + length > this.node.length) {
      this.accounting.invalidOp(kind);
      throw new BlockError(
        'EINVAL',
        `${op}: range ${offset}+${length} is beyond the end of drive ${this.id} (${this.node.length} bytes)`,
        { node: this.node.name, offset, length },
      );
    }
    if (this.readOnly && kind !== IoKind.Read && kind !== IoKind.Flush) {
      this.accounting.invalidOp(kind);
      throw new BlockError('EROFS', `${op}: drive ${this.id} is read-only`, { node: this.node.name, offset, length });
    }
    if (signal?.aborted) throw this.canceled(op, offset);
    this.inFlight++;
  }

  private leave(): void {
    if (--this.inFlight === 0 && this.idle !== null) {
      const idle = this.idle;
      this.idle = null;
      idle();
    }
  }

  private canceled(op: IoOperation, offset: number): BlockError {
    return new BlockError('ECANCELED', `${op}: request at offset ${offset} was aborted`, { node: this.node.name, offset });
  }

  private failed(kind: IoKind, op: IoOperation, offset: number, length: number, start: number, e: unknown): BlockError {
    const error = fromErrno(e, `${op} at offset ${offset}`, { node: this.node.name, offset, length });
    if (error.code === 'ECANCELED') return error;
    this.accounting.failedOp(kind, start, this.clock.now());
    if (this.listenerCount('io-error') > 0) this.emit('io-error', { operation: op, offset, length, error });
    return error;
  }
}
