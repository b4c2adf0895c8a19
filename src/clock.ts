/** A pending one-shot timer; `cancel()` is idempotent. */
export interface ClockTimer {
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

/** The real monotonic clock (performance.now) and Node timers. */
export class RealClock implements Clock {
  // performance.now() starts near zero for each process, so ns values stay far below 2^53.
  now(): number {
    return Math.round(performance.now() * 1e6);
  }

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

interface VirtualTimer extends ClockTimer {
  deadline: number;
  seq: number;
  callback: (() => void) | null;
}

/** Lets pending promise chains (driver completions, awaits) run before time moves on. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A clock that moves only when told. Timers fire in deadline order (ties in creation order);
 * between timers, pending promise work is allowed to settle, so a test sees the same
 * interleaving as real time would give, instantly.
 */
export class VirtualClock implements Clock {
  private current: number;
  private seq = 0;
  private readonly timers: VirtualTimer[] = [];

  constructor(startNs = 0) {
    this.current = startNs;
  }

  now(): number {
    return this.current;
  }

  setTimer(deadlineNs: number, callback: () => void): ClockTimer {
    const timer: VirtualTimer = {
      deadline: deadlineNs,
      seq: this.seq++,
      callback,
      cancel: () => {
        timer.callback = null;
      },
    };
    this.timers.push(timer);
    return timer;
  }

  /** Number of timers still pending. */
  get pendingTimers(): number {
    return this.timers.filter((t) => t.callback !== null).length;
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
    await settle();
    for (let fired = 0; fired < maxTimers; fired++) {
      const next = this.nextTimer();
      if (!next) return this.current;
      this.fire(next);
      await settle();
    }
    throw new Error(`VirtualClock.runUntilIdle: more than ${maxTimers} timers fired`);
  }

  private async runUntil(target: number): Promise<void> {
    await settle();
    for (;;) {
      const next = this.nextTimer();
      if (!next || next.deadline > target) break;
      this.fire(next);
      await settle();
    }
    this.current = target;
    await settle();
  }

  private fire(timer: VirtualTimer): void {
    this.timers.splice(this.timers.indexOf(timer), 1);
    if (timer.deadline > this.current) this.current = timer.deadline;
    const cb = timer.callback;
    timer.callback = null;
    cb?.();
  }

  private nextTimer(): VirtualTimer | undefined {
    let best: VirtualTimer | undefined;
    for (let i = this.timers.length - 1; i >= 0; i--) {
      const t = this.timers[i];
      if (t.callback === null) {
        this.timers.splice(i, 1);
        continue;
      }
      if (!best || t.deadline < best.deadline || (t.deadline === best.deadline && t.seq < best.seq)) best = t;
    }
    return best;
  }
}
