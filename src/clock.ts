import { ImmediateWatch, loopTurn, nextTick } from './platform/event-loop.js';
import { monotonicNs } from './platform/monotonic.js';

/** A pending one-shot timer; `cancel()` is idempotent. */
export interface ClockTimer {
  /** Stops the timer; its callback will not run (nothing happens if it already ran). */
  cancel(): void;
}

/**
 * Monotonic time in nanoseconds plus one-shot timers. Everything in the library reads time
 * and sets timers through a Clock, so a {@link VirtualClock} makes it exact and instant.
 */
export interface Clock {
  /** Monotonic time in nanoseconds (a float-free integer count on VirtualClock). */
  now(): number;
  /** Calls `callback` once when `now()` reaches `deadlineNs` (on a later turn if already past; never inside setTimer). */
  setTimer(deadlineNs: number, callback: () => void): ClockTimer;
}

/**
 * Longest delay handed to one setTimeout. Node (like browsers) turns a delay above 2^31-1 ms
 * (~24.8 days) into 1 ms; a longer wait is armed in steps of at most this, each step
 * re-reading the clock, so the timer still fires at its deadline and never before.
 */
const MAX_TIMEOUT_MS = 2 ** 30;

/** The real monotonic clock (process.hrtime in Node, performance.now in browsers) and the platform's timers. */
export class RealClock implements Clock {
  /** Monotonic nanoseconds since the process (or page) started. */
  // Starts near zero for each process (or page), so ns values stay far below 2^53.
  now(): number {
    return monotonicNs();
  }

  /** Calls `callback` once when the deadline has passed, through the platform's setTimeout. */
  setTimer(deadlineNs: number, callback: () => void): ClockTimer {
    // The time is read once here: the callback must never run inside setTimer (callers set
    // state after it returns), even when the deadline passes while we arm the timer.
    const delayNs = deadlineNs - this.now();
    // Due now: the next loop turn (setTimeout(0) would wait a whole millisecond).
    if (delayNs <= 0) {
      const immediate = setImmediate(callback);
      return { cancel: () => clearImmediate(immediate) };
    }
    // The handle of the step armed now; a re-arm replaces it, so cancel clears the current one.
    let handle: ReturnType<typeof setTimeout> | null = null;
    const fire = () => {
      handle = null;
      callback();
    };
    // Node timers fire in whole milliseconds; round up so a timer never fires before its deadline.
    const step = (ns: number) => {
      const ms = Math.ceil(ns / 1e6);
      handle = ms > MAX_TIMEOUT_MS ? setTimeout(rearm, MAX_TIMEOUT_MS) : setTimeout(fire, ms);
    };
    // Only ever called from a timeout: a long wait continues with what is left of it.
    const rearm = () => {
      const rest = deadlineNs - this.now();
      if (rest <= 0) fire();
      else step(rest);
    };
    step(delayNs);
    return {
      cancel: () => {
        if (handle !== null) clearTimeout(handle);
        handle = null;
      },
    };
  }
}

/** A timer of a {@link VirtualClock}: an entry of its heap, cancelled lazily (callback cleared). */
class VirtualTimer implements ClockTimer {
  constructor(
    readonly clock: VirtualClock,
    readonly deadline: number,
    readonly seq: number,
    public callback: (() => void) | null,
  ) {}

  cancel(): void {
    if (this.callback === null) return;
    this.callback = null;
    this.clock.timerCancelled();
  }
}

/** True if `a` fires before `b`: earlier deadline, ties in creation order. */
function before(a: VirtualTimer, b: VirtualTimer): boolean {
  return a.deadline < b.deadline || (a.deadline === b.deadline && a.seq < b.seq);
}

/** Settled once: `.then` on it queues a microtask (cheaper than queueMicrotask, which makes an AsyncResource per call). */
const settled = Promise.resolve();

/**
 * One `advance*` or `runUntilIdle` firing timers, as a loop of callbacks rather than an async
 * function (no promise, closure or async frame per timer). Each timer is fired from a microtask;
 * then a process.nextTick queued right after the callback runs only once the microtask queue has
 * drained (Node runs nextTicks queued from a microtask after every microtask, including ones
 * queued meanwhile), and it hands back to a microtask (queued behind the nextTicks that promise
 * work queued) that fires the next timer: per timer one tick and one promise reaction.
 */
class TimerRun {
  readonly done: Promise<void>;
  private resolve!: () => void;
  private reject!: (error: unknown) => void;
  private readonly watch = new ImmediateWatch();
  private fired = 0;

  constructor(
    private readonly clock: VirtualClock,
    /** Timers due after this time stay pending. */
    private readonly target: number,
    /** Most timers to fire before failing (runUntilIdle's guard against endless timers). */
    private readonly maxTimers: number,
  ) {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.watch.arm();
    this.step();
  }

  /** Fires the next due timer (or ends the run); always called from a microtask. */
  private readonly step = (): void => {
    // An immediate was queued meanwhile: let it run (one loop turn) before the next timer.
    if (this.watch.pending) {
      this.watch.disarm();
      setImmediate(this.afterTurn);
      return;
    }
    const next = this.clock.nextTimer();
    if (next === undefined || next.deadline > this.target) {
      this.watch.disarm();
      this.resolve();
      return;
    }
    if (this.fired === this.maxTimers) {
      this.watch.disarm();
      this.reject(new Error(`VirtualClock.runUntilIdle: more than ${this.maxTimers} timers fired`));
      return;
    }
    this.fired++;
    try {
      this.clock.fire(next);
    } catch (error) {
      this.watch.disarm();
      this.reject(error);
      return;
    }
    nextTick(this.drained);
  };

  /** The callback's microtasks have run: continue behind the nextTicks they queued. */
  private readonly drained = (): void => {
    void settled.then(this.step);
  };

  /** After the loop turn: fire from a microtask again, so the nextTick after the callback waits for its microtasks. */
  private readonly afterTurn = (): void => {
    this.watch.arm();
    void settled.then(this.step);
  };
}

/**
 * A clock that moves only when told. Timers fire in deadline order (ties in creation order).
 *
 * What runs between two timers (the interleaving real time would give a timer callback's work):
 * - every microtask (promise reactions, awaits, queueMicrotask), including ones queued while
 *   they run, however long the chain: a promise chain started by a timer callback, or I/O of a
 *   driver that completes in microtasks (null, memory), finishes before the next timer fires;
 * - process.nextTick callbacks queued by the callback or by that promise work (but not the
 *   promise work such a nextTick callback starts in turn);
 * - if a setImmediate callback was queued meanwhile (by the callback, its promise work, or
 *   anyone), one event-loop turn, so it runs before the next timer.
 * Work that needs more loop turns (thread-pool I/O such as file reads, sockets, setTimeout,
 * immediates queued by those immediates) is not awaited between timers. `advance*` and `runUntilIdle` also give
 * one full event-loop turn when they start and `advance*` one when they end.
 * No event-loop turn is spent per timer otherwise, so a million timers fire in about a second:
 * waiting for a timer's work costs one process.nextTick and one promise reaction (see TimerRun),
 * which is the floor of "after every microtask" in Node, and timers due at the same time still
 * get that wait each (a timer's work may set or cancel the next ones).
 * (Before issue 10 every timer was followed by a setImmediate turn: that also let the immediates
 * pending at that moment run, but not one scheduled later by the callback's promise work.)
 * Like before, it needs the real setImmediate and process.nextTick (not faked ones).
 */
export class VirtualClock implements Clock {
  private current: number;
  private seq = 0;
  /** Binary min-heap on (deadline, seq); cancelled timers stay until they reach the top. */
  private readonly heap: VirtualTimer[] = [];
  private live = 0;

  /** A clock standing at `startNs` until it is moved. */
  constructor(startNs = 0) {
    this.current = startNs;
  }

  /** The virtual time in nanoseconds: changes only by advance, advanceNs, advanceTo or runUntilIdle. */
  now(): number {
    return this.current;
  }

  /** Queues `callback` for when the clock is moved to `deadlineNs` or past it. */
  setTimer(deadlineNs: number, callback: () => void): ClockTimer {
    const timer = new VirtualTimer(this, deadlineNs, this.seq++, callback);
    this.push(timer);
    this.live++;
    return timer;
  }

  /** Number of timers still pending. */
  get pendingTimers(): number {
    return this.live;
  }

  /** Advances time by `ms` milliseconds, firing due timers in order. */
  advance(ms: number): Promise<void> {
    return this.advanceNs(Math.round(ms * 1e6));
  }

  /** Advances time by `ns` nanoseconds, firing due timers in order. */
  async advanceNs(ns: number): Promise<void> {
    if (!(ns >= 0)) throw new RangeError(`VirtualClock: cannot move back in time (${ns} ns)`);
    await this.runUntil(this.current + ns);
  }

  /** Advances to absolute time `ns`, firing due timers in order. */
  async advanceTo(ns: number): Promise<void> {
    await this.runUntil(Math.max(ns, this.current));
  }

  /** Fires every timer (including ones set by fired callbacks) until none is left; returns the time reached. */
  async runUntilIdle(maxTimers = 1_000_000): Promise<number> {
    await loopTurn();
    await new TimerRun(this, Number.POSITIVE_INFINITY, maxTimers).done;
    return this.current;
  }

  /** @internal A pending timer was cancelled. */
  timerCancelled(): void {
    this.live--;
    // Lazy deletion: rebuild when cancelled entries dominate, so the heap stays proportional to live timers.
    if (this.heap.length > 64 && this.live < this.heap.length >> 1) this.compact();
  }

  private async runUntil(target: number): Promise<void> {
    await loopTurn();
    await new TimerRun(this, target, Number.POSITIVE_INFINITY).done;
    this.current = target;
    await loopTurn();
  }

  /** @internal Pops `timer` (the top of the heap) and runs its callback at its deadline. */
  fire(timer: VirtualTimer): void {
    this.pop();
    if (timer.deadline > this.current) this.current = timer.deadline;
    const cb = timer.callback!;
    timer.callback = null;
    this.live--;
    cb();
  }

  /** @internal The next live timer (left at the top of the heap), dropping cancelled ones on the way. */
  nextTimer(): VirtualTimer | undefined {
    const heap = this.heap;
    while (heap.length > 0 && heap[0].callback === null) this.pop();
    return heap[0];
  }

  private push(timer: VirtualTimer): void {
    const heap = this.heap;
    let i = heap.length;
    heap.push(timer);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(timer, heap[parent])) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = timer;
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    this.siftDown(0, last);
  }

  private siftDown(start: number, timer: VirtualTimer): void {
    const heap = this.heap;
    const n = heap.length;
    let i = start;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && before(heap[child + 1], heap[child])) child++;
      if (!before(heap[child], timer)) break;
      heap[i] = heap[child];
      i = child;
    }
    heap[i] = timer;
  }

  private compact(): void {
    const heap = this.heap;
    let n = 0;
    for (const t of heap) if (t.callback !== null) heap[n++] = t;
    heap.length = n;
    for (let i = (n >> 1) - 1; i >= 0; i--) this.siftDown(i, heap[i]);
  }
}
