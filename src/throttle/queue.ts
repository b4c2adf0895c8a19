import type { ClockTimer } from '../clock.js';
import { BlockError } from '../errors.js';
import type { Direction } from './bucket.js';
import type { ThrottleGroup } from './group.js';

/**
 * A request waiting for its turn, linked into its queue so removal (abort) is O(1). The
 * request itself can be the waiter (no extra promise while it waits): the Drive's requests are.
 */
export interface Waiter {
  /** Size of the request, charged when it is admitted. */
  bytes: number;
  enqueuedAt: number;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  prev: Waiter | null;
  next: Waiter | null;
  /** Called once when the request may go (after it was charged to the group). */
  admit(): void;
  /** Called once if the request was aborted while waiting. */
  cancel(error: BlockError): void;
}

/** A waiter that settles a promise (for callers that simply await their turn). */
class PromiseWaiter implements Waiter {
  enqueuedAt = 0;
  onAbort: (() => void) | undefined = undefined;
  prev: Waiter | null = null;
  next: Waiter | null = null;
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

/** Told when a queue starts or stops holding requests back (the Drive turns it into events). */
export interface QueueListener {
  /** A waiting request was admitted (its promise was resolved). */
  released(): void;
  throttled(direction: Direction, queued: number): void;
  unthrottled(direction: Direction, delayedNs: number): void;
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
  /** The group this queue belongs to; set by the group. */
  group: ThrottleGroup;
  /** Round-robin ring links, maintained by the group. */
  rrNext: ThrottledRequestQueue = this;
  rrPrev: ThrottledRequestQueue = this;
  /** Requests waiting per direction. */
  readonly pending = [0, 0];
  /** The armed timer per direction (null: none). */
  readonly timers: [ClockTimer | null, ClockTimer | null] = [null, null];
  /** > 0 while drained: requests bypass the limits (still accounted). */
  ioLimitsDisabled = 0;
  listener: QueueListener | null = null;
  private readonly heads: [Waiter | null, Waiter | null] = [null, null];
  private readonly tails: [Waiter | null, Waiter | null] = [null, null];
  private readonly throttledSince = [0, 0];
  private delayed = 0;
  private totalDelay = 0;
  private maxDelay = 0;
  /** Timer callbacks made once, so arming a timer allocates no closure. */
  readonly timerCallbacks: readonly [() => void, () => void];

  constructor(name: string, group: ThrottleGroup) {
    this.name = name;
    this.group = group;
    this.timerCallbacks = [() => this.group.timerFired(this, 0), () => this.group.timerFired(this, 1)];
  }

  /**
   * Lets a request of `bytes` in `direction` go: `undefined` when it may go at once (already
   * accounted), otherwise a promise that resolves when it is admitted, or rejects with
   * ECANCELED if `signal` aborts first.
   */
  admit(direction: Direction, bytes: number, signal?: AbortSignal): Promise<void> | undefined {
    return this.group.intercept(this, direction, bytes, signal);
  }

  /** Lets every queued request go now, ignoring limits but charging the group (QEMU drained section). */
  drain(): void {
    this.group.drain(this);
  }

  /** Throttle figures of this queue. */
  stats(): ThrottleQueueStats {
    return {
      group: this.group.name,
      delayedRequests: this.delayed,
      totalDelayNs: this.totalDelay,
      maxDelayNs: this.maxDelay,
      queuedReads: this.pending[0],
      queuedWrites: this.pending[1],
    };
  }

  /**
   * Decides at once: true if a request of `bytes` may go now (it is charged), false if it must
   * wait — then the caller queues it with {@link enqueueWaiter} before doing anything else.
   */
  tryAdmit(direction: Direction, bytes: number): boolean {
    return this.group.tryAdmit(this, direction, bytes);
  }

  /** @internal Appends a waiting request that settles a promise. */
  enqueue(direction: Direction, bytes: number, signal: AbortSignal | undefined, now: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.enqueueWaiter(direction, new PromiseWaiter(bytes, signal, resolve, reject), now);
    });
  }

  /** Appends a waiting request (after {@link tryAdmit} said no). */
  enqueueWaiter(direction: Direction, w: Waiter, now = this.group.now()): void {
    w.enqueuedAt = now;
    const signal = w.signal;
    if (signal) {
      w.onAbort = () => this.abort(direction, w);
      signal.addEventListener('abort', w.onAbort, { once: true });
    }
    const tail = this.tails[direction];
    if (tail) {
      tail.next = w;
      w.prev = tail;
    } else this.heads[direction] = w;
    this.tails[direction] = w;
    if (this.pending[direction]++ === 0) {
      this.throttledSince[direction] = now;
      this.listener?.throttled(direction, 1);
    }
  }

  /** @internal Removes the head request; the group charges it, then calls `admit()` on it. */
  dequeue(direction: Direction, now: number): Waiter {
    const w = this.heads[direction]!;
    this.unlink(direction, w);
    const delay = now - w.enqueuedAt;
    this.delayed++;
    this.totalDelay += delay;
    if (delay > this.maxDelay) this.maxDelay = delay;
    if (w.onAbort) w.signal!.removeEventListener('abort', w.onAbort);
    if (this.pending[direction] === 0) this.listener?.unthrottled(direction, now - this.throttledSince[direction]);
    return w;
  }

  private abort(direction: Direction, w: Waiter): void {
    this.unlink(direction, w);
    w.cancel(new BlockError('ECANCELED', `request of ${w.bytes} bytes on ${this.name} was aborted while throttled`));
    if (this.pending[direction] === 0) this.listener?.unthrottled(direction, this.group.now() - this.throttledSince[direction]);
  }

  private unlink(direction: Direction, w: Waiter): void {
    if (w.prev) w.prev.next = w.next;
    else this.heads[direction] = w.next;
    if (w.next) w.next.prev = w.prev;
    else this.tails[direction] = w.prev;
    w.prev = w.next = null;
    this.pending[direction]--;
  }
}
