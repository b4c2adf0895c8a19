import { EventEmitter } from 'eventemitter3';
import type { Clock } from './clock.js';
import { asBytes, canceledError, describe, isSignal, rangeError } from './drive/args.js';
import { type DirtyExtentsOptions, dirtyExtents } from './drive/dirty-extents.js';
import type { ErrorPolicy } from './drive/error-policy.js';
import type { DriveEvents, IoStatus } from './drive/events.js';
import { type IoOperation, OP_DISCARD, OP_FLUSH, OP_KINDS, OP_NAMES, OP_READ, OP_WRITE, OP_WRITE_ZEROES, type Op, type RequestOptions } from './drive/request.js';
import { RequestPath } from './drive/request-path.js';
import { type DriveLimits, ThrottleMembership } from './drive/throttle-membership.js';
import { type DriveReadableStreamOptions, driveReadableStream } from './drive/web-stream.js';
import { BlockError } from './errors.js';
import type { BlockStatus } from './node/driver.js';
import { mergedExtents } from './node/extents.js';
import type { DirtyBitmapInfo, DirtyExtent } from './node/dirty-bitmap.js';
import type { AddDirtyBitmapOptions } from './node/dirty-bitmaps.js';
import type { BlockNode } from './node/node.js';
import type { PreallocMode } from './node/types.js';
import { MAX_BUFFER_LENGTH } from './platform/buffer-limit.js';
import { type DriveStats, StatsAccounting } from './stats.js';
import type { ThrottleGroupRegistry } from './throttle/group.js';
import type { ThrottleOptions } from './throttle/limits.js';
import type { ThrottleQueueStats } from './throttle/queue.js';

export type { ErrorAction, ErrorPolicy } from './drive/error-policy.js';
export type { DriveEvents, IoErrorEvent, IoStatus } from './drive/events.js';
export type { IoOperation, RequestOptions } from './drive/request.js';
export type { DriveLimits } from './drive/throttle-membership.js';

/** What a drive needs from the layer that owns it. */
export interface DriveHost {
  /** The layer's clock: timestamps for accounting and throttling. */
  readonly clock: Clock;
  /** The layer's throttle groups, which the drive joins by name. */
  readonly groups: ThrottleGroupRegistry;
  /** Called once when the drive has closed its queues, before its graph closes. */
  forget(drive: Drive): void;
}

type State = 'open' | 'closing' | 'closed';

/** The largest buffer a read may allocate (Node's limit; larger reads are refused, not thrown). */
const MAX_READ_BUFFER = MAX_BUFFER_LENGTH;

/**
 * The user's handle on a disk (QEMU: BlockBackend): bounds-checked I/O on the root node of a
 * graph, accounting, events, AbortSignal, throttling, error policies, drain/pause, close. The
 * request path behind it lives in src/drive/ (request record, gate, error policy).
 */
export class Drive extends EventEmitter<DriveEvents> {
  /** Unique id within the owning layer. */
  readonly id: string;
  private root: BlockNode;
  /** Whether writes are refused. */
  readonly readOnly: boolean;
  /** The owning layer's clock (real or virtual time). */
  protected readonly clock: Clock;
  private readonly accounting = new StatsAccounting();
  private state: State = 'open';
  private closing: Promise<void> | null = null;
  private readonly host: DriveHost;
  private readonly path: RequestPath;
  private readonly membership: ThrottleMembership;

  /** @internal drives are made by {@link BlockLayer.openDrive}. */
  constructor(id: string, node: BlockNode, host: DriveHost, policy: ErrorPolicy = {}) {
    super();
    this.id = id;
    this.root = node;
    this.host = host;
    this.clock = host.clock;
    this.readOnly = node.readOnly;
    this.path = new RequestPath(node, this.clock, this.accounting, this, id, policy);
    this.membership = new ThrottleMembership(id, host.groups, this.path);
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
    if (this.membership.set(options, rules) && this.listenerCount('limits-changed') > 0) {
      this.emit('limits-changed', { group: this.membership.group?.name ?? null });
    }
  }

  /** The drive's limits and group, or null when it is not throttled. */
  getLimits(): DriveLimits | null {
    return this.membership.limits();
  }

  /** Root node of the drive's graph (it changes when a job or a snapshot replaces it: {@link replaceNode}). */
  get node(): BlockNode {
    return this.root;
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
    return this.path.submit(OP_READ, offset, buffer, length, signal) as Promise<Uint8Array>;
  }

  /** Writes `data` (a Uint8Array or Buffer; an ArrayBuffer or DataView by its bytes) at `offset`. */
  write(offset: number, data: Uint8Array | ArrayBuffer | DataView, options?: RequestOptions): Promise<void> {
    const bytes = asBytes(data);
    if (bytes === null) return this.refuse(OP_WRITE, offset, -1, `data must be a Uint8Array, Buffer, ArrayBuffer or DataView, not ${describe(data)}`, 'data');
    const signal = options?.signal;
    const refused = this.check(OP_WRITE, offset, bytes.length, signal);
    if (refused !== null) return Promise.reject(refused);
    return this.path.submit(OP_WRITE, offset, bytes, bytes.length, signal) as Promise<void>;
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
    return this.path.submit(op, offset, null, length, signal) as Promise<void>;
  }

  /** Whether a `stop` error policy has paused the drive (held requests wait for {@link resume}). */
  get isPaused(): boolean {
    return this.path.gate.paused;
  }

  /** QEMU's io-status: `ok`, or `failed` / `nospace` while paused by an error. */
  get ioStatus(): IoStatus {
    return this.path.policy.status;
  }

  /**
   * After a `stop` error policy paused the drive (QEMU's `cont`): retries the failed requests
   * in their order of arrival, then lets the requests that arrived meanwhile go, in order.
   * Does nothing when the drive is not paused.
   */
  resume(): void {
    if (!this.path.gate.paused) return;
    const retried = this.path.resume();
    if (this.listenerCount('resumed') > 0) this.emit('resumed', { retried });
  }

  /**
   * The node the drive's dirty bitmaps live on: the root, or the first node below it that is
   * not a filter (a throttle or blkdebug filter passes every write down to it).
   */
  get bitmapNode(): BlockNode {
    let node = this.node;
    for (let child = node.child('file'); node.driver.capabilities.kind === 'filter' && child !== undefined; child = node.child('file')) node = child;
    return node;
  }

  /**
   * Starts a dirty bitmap (QEMU block-dirty-bitmap-add): from now on every write, write-zeroes
   * and discard that reaches the disk, by any path, marks the granules it touches. A
   * `persistent` one is stored in the image at close (qcow2).
   */
  addDirtyBitmap(name: string, options?: AddDirtyBitmapOptions): DirtyBitmapInfo {
    return this.bitmapNode.bitmaps.add(name, options).info();
  }

  /** Removes a dirty bitmap (from the image too if it is persistent). */
  removeDirtyBitmap(name: string): Promise<void> {
    try {
      return this.bitmapNode.bitmaps.remove(name);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Marks every granule of a bitmap clean (after a backup copied them). */
  clearDirtyBitmap(name: string): void {
    this.bitmapNode.bitmaps.clear(name);
  }

  /** Makes a bitmap record writes again. */
  enableDirtyBitmap(name: string): void {
    this.bitmapNode.bitmaps.setRecording(name, true);
  }

  /** Stops a bitmap recording writes (its bits stay). */
  disableDirtyBitmap(name: string): void {
    this.bitmapNode.bitmaps.setRecording(name, false);
  }

  /** Adds the dirty bits of the bitmaps named in `sources` (of this drive) to `target`. */
  mergeDirtyBitmaps(target: string, sources: readonly string[]): void {
    const bitmaps = this.bitmapNode.bitmaps;
    bitmaps.merge(target, sources.map((name) => bitmaps.get(name)));
  }

  /** Every dirty bitmap of the drive: name, granularity, dirty bytes, flags. */
  dirtyBitmaps(): DirtyBitmapInfo[] {
    return this.bitmapNode.bitmaps.info();
  }

  /**
   * The dirty extents of a bitmap, in order, for `for await`: an incremental backup copies
   * exactly these. Writes during the walk are seen from where the walk has got to.
   */
  dirtyExtents(name: string, options?: DirtyExtentsOptions): AsyncGenerator<DirtyExtent, void, undefined> {
    const node = this.bitmapNode;
    // The lookup runs at the first step, so an unknown name rejects like any other bad input.
    return (async function* () {
      yield* dirtyExtents(node.bitmaps.get(name), node.name, options);
    })();
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
  stats(): DriveStats & {
    /** The drive's throttle queues, present while the drive is throttled. */
    throttle?: ThrottleQueueStats;
  } {
    const s: DriveStats & { throttle?: ThrottleQueueStats } = this.accounting.snapshot(
      this.clock.now(),
      this.path.outstanding,
    );
    if (this.path.throttle !== null) s.throttle = this.path.throttle.stats();
    return s;
  }

  /**
   * A drained section (QEMU's bdrv_drained_begin/end): lets every queued request go now,
   * ignoring limits (still accounted), and waits until none of them is in flight. Requests
   * that arrive meanwhile are held and go, in order, when the drain ends, so a drain takes
   * only as long as what was in flight when it began.
   */
  async drain(): Promise<void> {
    await this.drained(() => undefined);
  }

  /**
   * Resizes the drive's disk to `size` bytes (QEMU block_resize, qemu-img resize) in a drained
   * section: requests in flight finish first, those arriving meanwhile go once the new size is
   * in place. Shrinking needs `shrink: true`. Emits `resize`.
   */
  async resize(size: number, options: { shrink?: boolean; prealloc?: PreallocMode } = {}): Promise<void> {
    if (this.state !== 'open') throw new BlockError('ECLOSED', `resize: drive ${this.id} is ${this.state}`, { node: this.node.name });
    if (this.readOnly) throw new BlockError('EROFS', `resize: drive ${this.id} is read-only`, { node: this.node.name });
    await this.drained(async () => {
      const oldSize = this.node.length;
      await this.node.truncate(size, { shrink: options.shrink === true, prealloc: options.prealloc ?? 'off' });
      if (this.listenerCount('resize') > 0) this.emit('resize', { oldSize, newSize: this.node.length });
    });
  }

  /**
   * Runs `action` inside a drained section: nothing of this drive is in flight while it runs,
   * and requests arriving meanwhile are held until it returns.
   */
  private async drained<T>(action: () => T | Promise<T>): Promise<T> {
    const gate = this.path.gate;
    gate.drains++;
    gate.update();
    let drainEnd: (() => void) | undefined;
    try {
      this.path.throttle?.drain();
      // Throttle filters below stay drained for the section: what the drive's queue lets go now reaches them later.
      drainEnd = this.node.drainBegin();
      await this.whenIdle();
      return await action();
    } finally {
      drainEnd?.();
      gate.drains--;
      gate.update();
    }
  }

  /**
   * Puts `node` under the drive in place of its root (QEMU bdrv_replace_node, for this
   * BlockBackend): in a drained section, so every request before it went to the old root and
   * every later one goes to the new. The drive takes a reference on `node` and releases the
   * old root's. Used by block jobs (mirror, active commit) and external snapshots.
   */
  async replaceNode(node: BlockNode): Promise<void> {
    if (this.state !== 'open') throw new BlockError('ECLOSED', `replaceNode: drive ${this.id} is ${this.state}`);
    if (!this.readOnly && node.readOnly) {
      throw new BlockError('EINVAL', `replaceNode: node '${node.name}' is read-only but drive ${this.id} is read-write`, { node: node.name });
    }
    node.ref();
    let old: BlockNode;
    try {
      old = await this.drained(() => {
        const before = this.root;
        this.root = node;
        this.path.node = node;
        return before;
      });
    } catch (e) {
      await node.unref();
      throw e;
    }
    if (old === node) {
      await node.unref();
      return;
    }
    if (this.listenerCount('node-replaced') > 0) this.emit('node-replaced', { oldNode: old.name, newNode: node.name });
    await old.unref();
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
    this.membership.lift();
    let drainEnd: () => void;
    try {
      drainEnd = this.node.drainBegin();
    } catch (e) {
      this.membership.unlift();
      throw e;
    }
    let lifted = true;
    return () => {
      if (!lifted) return;
      lifted = false;
      this.membership.unlift();
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
          if (this.path.gate.paused) {
            this.path.failPaused();
            break;
          }
          if (this.path.inFlight === 0 && this.path.gate.size === 0) break;
        }
        this.membership.leave();
        this.host.forget(this);
        await this.node.unref();
      } finally {
        this.state = 'closed';
        this.emit('closed');
      }
    })();
    return this.closing;
  }

  /** Closes the drive, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Resolves when no request is in flight (held and paused ones are not in flight). */
  whenIdle(): Promise<void> {
    return this.path.whenIdle();
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

  private rangeError(name: string, offset: unknown, length: unknown): BlockError | null {
    return rangeError(name, offset, length, this.node.length, this.id, this.node.name);
  }

  /** ECANCELED for a request whose signal aborted; `reason` (the signal's) becomes the error's `cause`. */
  private canceled(op: IoOperation, offset: number, reason: unknown): BlockError {
    return canceledError(op, offset, reason, this.node.name);
  }
}
