import type { ClockTimer } from '../clock.js';
import { BlockError } from '../errors.js';
import type { Direction } from './bucket.js';

/**
 * A request waiting for its turn as an object (the generic path: the throttle filter node,
 * {@link ThrottledRequestQueue.admit}). The Drive's requests use the compact path instead.
 */
export interface Waiter {
  /** Size of the request, charged when it is admitted. */
  readonly bytes: number;
  readonly signal: AbortSignal | undefined;
  /** Called once when the request may go (after it was charged to the group). */
  admit(): void;
  /** Called once if the request was aborted while waiting. */
  cancel(error: BlockError): void;
}

/** A waiter that settles a promise (for callers that simply await their turn). */
class PromiseWaiter implements Waiter {
  constructor(
    readonly bytes: number,
    readonly signal: AbortSignal | undefined,
    private readonly resolve: () => void,
    private readonly reject: (e: BlockError) => void,
  ) {}
  admit(): void {
    this.resolve();
  }
  cancel(error: BlockError): void {
    this.reject(error);
  }
}

/** Settles the caller's promise of a request (its resolve function). */
export type Settle = (value: Uint8Array | undefined | PromiseLike<Uint8Array | undefined>) => void;

/**
 * A Drive request as the queue sees it (the Drive's request record is one). While it waits the
 * queue keeps its fields in columns, not the record: a queued request costs no object.
 */
export interface QueuedRequest {
  offset: number;
  /** Read target or write data; null for a write-zeroes (its size in `length`). */
  payload: Uint8Array | null;
  length: number;
  /** Enqueue time (the clock's). */
  start: number;
  /** Arrival number; the queue keeps its low 32 bits (fewer than 2^32 requests arrive while one waits). */
  seq: number;
  signal: AbortSignal | undefined;
  /** The caller's resolve, handed to the request's run when it is admitted. */
  settle: Settle | null;
  /** The caller's reject; kept while queued only for a request that has a signal. */
  reject: ((e: unknown) => void) | null;
}

/** Receives the Drive's compact queued requests when they are admitted or aborted. */
export interface QueuedRequestSink {
  /** A record for a request the queue lets go (filled by the queue, then given to {@link admitQueued}). */
  claim(): QueuedRequest;
  /** A request may go (already charged); `seq` holds the low 32 bits of its arrival number. */
  admitQueued(direction: Direction, r: QueuedRequest): void;
  /** A request with a signal was aborted while waiting. */
  cancelQueued(reject: (e: unknown) => void, error: BlockError): void;
}

/** Marks a FIFO slot that holds a {@link Waiter} object (in `target`) rather than a compact request. */
const WAITER = Symbol('waiter');

/** What a request with an AbortSignal needs besides its columns (only such requests pay for it). */
interface SignalRecord {
  signal: AbortSignal;
  onAbort: () => void;
  reject: ((e: unknown) => void) | undefined;
}

const INITIAL_CAPACITY = 8;

/**
 * A plain array of unboxed doubles (8 bytes a slot, on the JS heap): unlike a Float64Array it
 * has no ArrayBuffer behind it, whose header and off-heap store would cost more per ring.
 */
function doubles(n: number): number[] {
  return new Array<number>(n).fill(0.5);
}

// The rings of a FIFO that never held a request: shared and never written (push grows first), so
// an idle member (a drive with a limit it never reaches) costs no ring at all.
const NO_REFS: unknown[] = [null].slice(0, 0);
const NO_NUMS: number[] = [0.5].slice(0, 0);

/**
 * One direction of a member: its timer, its count of waiting requests and its FIFO, the hot
 * state of a dispatch in one object. The FIFO is a ring of columns, so a queued request costs its fields and nothing
 * more (no object header, no links): `target` (the promise's resolve function, or a Waiter, or
 * null once aborted) and `data` side by side in one array, offset and enqueue time side by side
 * in another (a slot's fields share a cache line: with thousands of queues, each dequeue touches
 * cold memory), and the low bits of the arrival number. It grows by an eighth at a time (little
 * slack; copying stays amortized O(1)) and shrinks back when it empties.
 */
export class RequestFifo {
  /** Requests waiting (aborted ones no longer count). */
  pending = 0;
  /** The armed timer of this member and direction (null: none). */
  timer: ClockTimer | null = null;
  capacity = 0;
  /** Ring index of the oldest slot. */
  head = 0;
  /** Slots in use, aborted ones (target null) included. */
  size = 0;
  /** Absolute number of the slot at `head` (slot ids key the signal records). */
  firstId = 0;
  /** Slot i: target at 2i, data at 2i+1. */
  refs: unknown[] = NO_REFS;
  /** Slot i: offset at 2i, enqueue time at 2i+1. */
  nums: number[] = NO_NUMS;
  /** Allocated only once a non-zero value is stored (drives that can never park a request store 0). */
  seq: Uint32Array | null = null;
  /** Records of queued requests with a signal, by slot id; made with the first one. */
  signals: Map<number, SignalRecord> | null = null;

  /** @param onTimer the timer callback of this member and direction, made once (arming a timer allocates no closure). */
  constructor(readonly onTimer: () => void) {}

  /** Appends a slot; returns its absolute id. */
  push(target: unknown, data: unknown, offset: number, time: number, seq: number): number {
    if (this.size === this.capacity) this.grow();
    let i = this.head + this.size;
    if (i >= this.capacity) i -= this.capacity;
    this.refs[2 * i] = target;
    this.refs[2 * i + 1] = data;
    this.nums[2 * i] = offset;
    this.nums[2 * i + 1] = time;
    if (this.seq !== null) this.seq[i] = seq;
    else if (seq !== 0) {
      this.seq = new Uint32Array(this.capacity);
      this.seq[i] = seq;
    }
    return this.firstId + this.size++;
  }

  target(i: number): unknown {
    return this.refs[2 * i];
  }

  data(i: number): unknown {
    return this.refs[2 * i + 1];
  }

  offset(i: number): number {
    return this.nums[2 * i];
  }

  time(i: number): number {
    return this.nums[2 * i + 1];
  }

  /** Marks slot `i` aborted (dequeue skips it) and lets go of what it held. */
  clearSlot(i: number): void {
    this.refs[2 * i] = null;
    this.refs[2 * i + 1] = null;
  }

  /** Ring index of absolute id `id` (which must be in the FIFO). */
  indexOf(id: number): number {
    const i = this.head + (id - this.firstId);
    return i >= this.capacity ? i - this.capacity : i;
  }

  /** Drops the head slot (its fields were read already). */
  shift(): void {
    const i = this.head;
    this.clearSlot(i);
    this.head = i + 1 === this.capacity ? 0 : i + 1;
    this.firstId++;
    if (--this.size === 0 && this.capacity > INITIAL_CAPACITY * 8) this.reset();
  }

  /** Forgets every slot (all aborted): the ring need not wait for a dequeue to give them back. */
  clear(): void {
    this.firstId += this.size;
    this.size = 0;
    this.head = 0;
    if (this.capacity > INITIAL_CAPACITY * 8) this.reset();
  }

  private grow(): void {
    const cap = this.capacity + Math.max(INITIAL_CAPACITY, this.capacity >> 3);
    const refs = new Array(2 * cap).fill(null);
    const nums = doubles(2 * cap);
    const seq = this.seq === null ? null : new Uint32Array(cap);
    // The ring's slots in order: [head, end of ring), then [0, rest) if it wraps.
    const first = Math.min(this.size, this.capacity - this.head);
    const rest = this.size - first;
    for (let k = 0; k < 2 * first; k++) {
      refs[k] = this.refs[2 * this.head + k];
      nums[k] = this.nums[2 * this.head + k];
    }
    for (let k = 0; k < 2 * rest; k++) {
      refs[2 * first + k] = this.refs[k];
      nums[2 * first + k] = this.nums[k];
    }
    if (seq !== null) {
      seq.set(this.seq!.subarray(this.head, this.head + first));
      if (rest > 0) seq.set(this.seq!.subarray(0, rest), first);
    }
    this.refs = refs;
    this.nums = nums;
    this.seq = seq;
    this.capacity = cap;
    this.head = 0;
  }

  /** Back to no ring once empty, so a burst's memory is given back. */
  private reset(): void {
    this.capacity = 0;
    this.head = 0;
    this.refs = NO_REFS;
    this.nums = NO_NUMS;
    this.seq = null;
  }
}

/** Told when a queue starts or stops holding requests back (the Drive turns it into events). */
export interface QueueListener {
  /** A waiting request was admitted (its promise was resolved). */
  released(): void;
  throttled(direction: Direction, queued: number): void;
  unthrottled(direction: Direction, delayedNs: number): void;
}

/**
 * What a member needs of its group (QEMU: the ThrottleGroup a ThrottleGroupMember points to),
 * given to the member when it is made. The group (group.ts) implements it; this module never
 * imports the group, which drives its members through their fields and methods below.
 */
export interface ThrottleScheduler {
  /** The group's name. */
  readonly name: string;
  /** @internal Requests waiting in all members, per direction (the members keep it up to date). */
  readonly waiting: number[];
  /** @internal The current time of the group's clock. */
  now(): number;
  /** @internal A member's timer fired. */
  timerFired(m: ThrottledRequestQueue, dir: Direction): void;
  /** @internal True if a request of `bytes` goes now (charged), false if it must wait. */
  tryAdmit(m: ThrottledRequestQueue, dir: Direction, bytes: number, now?: number): boolean;
  /** @internal tryAdmit, or a promise that resolves when the request is admitted. */
  intercept(m: ThrottledRequestQueue, dir: Direction, bytes: number, signal: AbortSignal | undefined): Promise<void> | undefined;
  /** @internal Flushes the member's queues at once, still charging the group. */
  drain(m: ThrottledRequestQueue): void;
  /** @internal Lifts the member's limits until unlift. */
  lift(m: ThrottledRequestQueue): void;
  /** @internal Ends one lift. */
  unlift(m: ThrottledRequestQueue): void;
}

/** Throttle figures of one queue, for `drive.stats().throttle`. */
export interface ThrottleQueueStats {
  /** Group the queue belongs to. */
  group: string;
  /** Requests that had to wait. */
  delayedRequests: number;
  /** Sum of their waits (ns). */
  totalDelayNs: number;
  /** Longest single wait (ns). */
  maxDelayNs: number;
  /** Reads waiting now. */
  queuedReads: number;
  /** Writes waiting now. */
  queuedWrites: number;
}

/**
 * The per-drive side of throttling (QEMU: ThrottleGroupMember): one FIFO per direction and
 * one timer slot per direction. Its group decides when requests go.
 */
export class ThrottledRequestQueue {
  /** Name used in messages (drive id or node name). */
  readonly name: string;
  /** The group this queue belongs to. */
  readonly group: ThrottleScheduler;
  /** @internal Round-robin ring link, maintained by the group. */
  rrNext: ThrottledRequestQueue = this;
  /** @internal Round-robin ring link, maintained by the group. */
  rrPrev: ThrottledRequestQueue = this;
  /** @internal Reads (direction 0); see {@link lane}. */
  readonly reads: RequestFifo;
  /** @internal Writes (direction 1); see {@link lane}. */
  readonly writes: RequestFifo;
  /** @internal > 0 while drained: requests bypass the limits (still accounted); kept by the group. */
  ioLimitsDisabled = 0;
  /** @internal Told when the queue starts or stops holding requests back (set by its owner). */
  listener: QueueListener | null = null;
  /** @internal Where the Drive's compact requests go when admitted or aborted. */
  sink: QueuedRequestSink | null = null;
  private readonly throttledSince = [0, 0];
  private delayed = 0;
  private totalDelay = 0;
  private maxDelay = 0;
  // The request taken off by dequeue(), until admitDequeued() hands it on: a waiter object, or
  // a compact request in a record claimed from the sink.
  private outWaiter: Waiter | null = null;
  private outRequest: QueuedRequest | null = null;
  private outDirection: Direction = 0;

  /** @internal members are made by their group ({@link ThrottleScheduler}). */
  constructor(name: string, group: ThrottleScheduler) {
    this.name = name;
    this.group = group;
    this.reads = new RequestFifo(() => this.group.timerFired(this, 0));
    this.writes = new RequestFifo(() => this.group.timerFired(this, 1));
  }

  /** @internal The state of one direction (fields, not an array: one object less to reach per dispatch). */
  lane(direction: Direction): RequestFifo {
    return direction === 0 ? this.reads : this.writes;
  }

  /**
   * Lets a request of `bytes` in `direction` go: `undefined` when it may go at once (already
   * accounted), otherwise a promise that resolves when it is admitted, or rejects with
   * ECANCELED (its `cause` the signal's reason) if `signal` aborts first.
   */
  admit(direction: Direction, bytes: number, signal?: AbortSignal): Promise<void> | undefined {
    return this.group.intercept(this, direction, bytes, signal);
  }

  /** Lets every queued request go now, ignoring limits but charging the group (QEMU drained section). */
  drain(): void {
    this.group.drain(this);
  }

  /**
   * Lifts the limits of this queue until {@link unlift}: queued requests go now, new ones at
   * once, all still charged to the group (QEMU: a drained section's io_limits_disabled). Nests.
   */
  lift(): void {
    this.group.lift(this);
  }

  /** Ends one {@link lift}. */
  unlift(): void {
    this.group.unlift(this);
  }

  /** Throttle figures of this queue. */
  stats(): ThrottleQueueStats {
    return {
      group: this.group.name,
      delayedRequests: this.delayed,
      totalDelayNs: this.totalDelay,
      maxDelayNs: this.maxDelay,
      queuedReads: this.reads.pending,
      queuedWrites: this.writes.pending,
    };
  }

  /**
   * Decides at once: true if a request of `bytes` may go now (it is charged), false if it must
   * wait — then the caller queues it with {@link enqueueWaiter} before doing anything else.
   * `now`: the clock's time if the caller has just read it.
   */
  tryAdmit(direction: Direction, bytes: number, now?: number): boolean {
    return this.group.tryAdmit(this, direction, bytes, now);
  }

  /** @internal Appends a waiting request that settles a promise. */
  enqueue(direction: Direction, bytes: number, signal: AbortSignal | undefined, now: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.enqueueWaiter(direction, new PromiseWaiter(bytes, signal, resolve, reject), now);
    });
  }

  /** Appends a waiting request object (after {@link tryAdmit} said no). */
  enqueueWaiter(direction: Direction, w: Waiter, now = this.group.now()): void {
    const id = this.lane(direction).push(w, WAITER, 0, now, 0);
    if (w.signal) this.watch(direction, id, w.signal, undefined);
    this.queued(direction, now);
  }

  /**
   * @internal The Drive's compact path (after {@link tryAdmit} said no): the request's fields are
   * stored in columns (the record itself is not kept); its `settle` is later given the request's run.
   */
  enqueueRequest(direction: Direction, r: QueuedRequest): void {
    const id = this.lane(direction).push(r.settle, r.payload ?? r.length, r.offset, r.start, r.seq >>> 0);
    if (r.signal) this.watch(direction, id, r.signal, r.reject ?? undefined);
    this.queued(direction, r.start);
  }

  private watch(direction: Direction, id: number, signal: AbortSignal, reject: ((e: unknown) => void) | undefined): void {
    const record: SignalRecord = { signal, onAbort: () => this.abort(direction, id), reject };
    const fifo = this.lane(direction);
    fifo.signals ??= new Map();
    fifo.signals.set(id, record);
    signal.addEventListener('abort', record.onAbort, { once: true });
  }

  private queued(direction: Direction, now: number): void {
    this.group.waiting[direction]++;
    if (this.lane(direction).pending++ === 0) {
      this.throttledSince[direction] = now;
      this.listener?.throttled(direction, 1);
    }
  }

  /**
   * @internal Removes the head request and returns its size; the group charges it, then calls
   * {@link admitDequeued} to let it go.
   */
  dequeue(direction: Direction, now: number): number {
    const fifo = this.lane(direction);
    // Aborted requests left their slot behind: skip them.
    while (fifo.target(fifo.head) === null) {
      fifo.shift();
    }
    const i = fifo.head;
    const target = fifo.target(i);
    const data = fifo.data(i);
    const time = fifo.time(i);
    let record: SignalRecord | undefined;
    if (fifo.signals !== null && fifo.signals.size > 0) {
      record = fifo.signals.get(fifo.firstId);
      if (record) {
        fifo.signals.delete(fifo.firstId);
        record.signal.removeEventListener('abort', record.onAbort);
      }
    }
    let bytes: number;
    this.outDirection = direction;
    if (data === WAITER) {
      this.outWaiter = target as Waiter;
      bytes = this.outWaiter.bytes;
    } else {
      const r = this.sink!.claim();
      r.settle = target as Settle;
      r.payload = typeof data === 'number' ? null : (data as Uint8Array);
      r.length = bytes = typeof data === 'number' ? data : (data as Uint8Array).length;
      r.offset = fifo.offset(i);
      r.start = time;
      r.seq = fifo.seq === null ? 0 : fifo.seq[i];
      r.signal = record?.signal;
      r.reject = record?.reject ?? null;
      this.outRequest = r;
    }
    fifo.shift();
    fifo.pending--;
    this.group.waiting[direction]--;
    const delay = now - time;
    this.delayed++;
    this.totalDelay += delay;
    if (delay > this.maxDelay) this.maxDelay = delay;
    if (fifo.pending === 0) this.listener?.unthrottled(direction, now - this.throttledSince[direction]);
    return bytes;
  }

  /** @internal Lets the request taken by {@link dequeue} go. */
  admitDequeued(): void {
    const waiter = this.outWaiter;
    const r = this.outRequest;
    this.outWaiter = null;
    this.outRequest = null;
    if (waiter !== null) waiter.admit();
    else this.sink!.admitQueued(this.outDirection, r!);
  }

  private abort(direction: Direction, id: number): void {
    const fifo = this.lane(direction);
    const record = fifo.signals?.get(id);
    if (!record) return;
    fifo.signals!.delete(id);
    const i = fifo.indexOf(id);
    const target = fifo.target(i);
    const data = fifo.data(i);
    // The slot stays (a FIFO cannot close a gap in O(1)); dequeue skips it.
    fifo.clearSlot(i);
    fifo.pending--;
    this.group.waiting[direction]--;
    const bytes = data === WAITER ? (target as Waiter).bytes : typeof data === 'number' ? data : (data as Uint8Array).length;
    const error = new BlockError('ECANCELED', `request of ${bytes} bytes on ${this.name} was aborted while throttled`, { cause: record.signal.reason });
    if (data === WAITER) (target as Waiter).cancel(error);
    else this.sink!.cancelQueued(record.reject!, error);
    if (fifo.pending === 0) {
      // Only aborted slots are left (their fields already cleared).
      if (fifo.signals!.size === 0) fifo.clear();
      this.listener?.unthrottled(direction, this.group.now() - this.throttledSince[direction]);
    }
  }
}
