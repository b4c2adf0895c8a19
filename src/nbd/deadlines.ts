import type { Clock, ClockTimer } from '../clock.js';

/** What a {@link Deadlines} queue calls when its time is up. */
export interface Expiring {
  expire(): void;
}

/**
 * Deadlines that all have the same timeout (the server's handshake timeout), so they fall due in
 * the order they were set: a FIFO under one clock timer instead of a timer per connection. A
 * cancelled entry lets go of its owner at once and leaves the queue when it reaches the head.
 * The timer stays armed while `keepArmed()` says so (a listening server keeps the process alive
 * anyway), so connections that come one after another do not each arm and clear a timer.
 */
export class Deadlines {
  private readonly at: number[] = [];
  private readonly who: (Expiring | null)[] = [];
  /** Index of the head in the arrays, and the ticket of the arrays' first entry. */
  private first = 0;
  private base = 0;
  private timer: ClockTimer | null = null;
  private readonly fire = () => this.expireDue();

  constructor(
    private readonly clock: Clock,
    private readonly timeoutNs: number,
    private readonly keepArmed: () => boolean,
  ) {}

  /** Calls `t.expire()` once the timeout has passed, unless {@link cancel}led with the ticket returned. */
  add(t: Expiring): number {
    const ticket = this.base + this.who.length;
    this.at.push(this.clock.now() + this.timeoutNs);
    this.who.push(t);
    if (this.timer === null) this.timer = this.clock.setTimer(this.at[this.first] as number, this.fire);
    return ticket;
  }

  /** The deadline of `ticket` will not expire (nothing happens if it already did). */
  cancel(ticket: number): void {
    const i = ticket - this.base;
    if (i < this.first || i >= this.who.length) return;
    this.who[i] = null;
    if (i === this.first) this.dropCancelled();
  }

  /** Stops the timer; deadlines pending will not expire. */
  clear(): void {
    this.timer?.cancel();
    this.timer = null;
    this.at.length = 0;
    this.who.length = 0;
    this.base += this.first;
    this.first = 0;
  }

  private expireDue(): void {
    this.timer = null;
    const now = this.clock.now();
    while (this.first < this.who.length) {
      const w = this.who[this.first];
      if (w !== null && (this.at[this.first] as number) > now) break;
      this.who[this.first] = null;
      this.first++;
      w?.expire();
    }
    this.dropCancelled();
    if (this.timer === null && this.first < this.who.length) this.timer = this.clock.setTimer(this.at[this.first] as number, this.fire);
  }

  /** Moves the head past cancelled entries; the arrays are compacted once most of them is behind it. */
  private dropCancelled(): void {
    while (this.first < this.who.length && this.who[this.first] === null) this.first++;
    const n = this.who.length;
    if (this.first === n) {
      this.base += n;
      this.first = 0;
      this.at.length = 0;
      this.who.length = 0;
      if (!this.keepArmed()) {
        this.timer?.cancel();
        this.timer = null;
      }
    } else if (this.first >= 64 && 2 * this.first >= n) {
      this.at.splice(0, this.first);
      this.who.splice(0, this.first);
      this.base += this.first;
      this.first = 0;
    }
  }
}
