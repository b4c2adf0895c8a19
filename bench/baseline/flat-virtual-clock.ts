/** Issue 10's baseline: VirtualClock as it was before (flat timer array scanned per fire, one setImmediate turn per timer), kept to measure against in the same run. */
import type { Clock, ClockTimer } from '../../src/clock.js';

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
export class FlatVirtualClock implements Clock {
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
