/**
 * A server-wide byte budget shared by all connections: a request takes its bytes before its
 * payload is read and gives them back once its reply has been written out. Waiters are served in
 * arrival order, so one busy connection cannot starve the others. A request larger than the whole
 * budget still goes through when nothing else holds any (the budget is never below the largest request).
 */
export class MemoryBudget {
  /** Bytes taken now. */
  used = 0;
  /** The most ever taken at once. */
  peak = 0;
  private readonly queue: { n: number; resolve: () => void }[] = [];

  constructor(readonly limit: number) {}

  /** Takes `n` bytes at once if they fit and nobody is waiting; false otherwise. */
  tryTake(n: number): boolean {
    if (this.queue.length > 0 || !this.fits(n)) return false;
    this.add(n);
    return true;
  }

  /**
   * Waits for `n` bytes. `cancel()` leaves the queue; it returns false when the bytes were already
   * taken for the waiter, which must then give them back.
   */
  wait(n: number): { taken: Promise<void>; cancel(): boolean } {
    let entry!: { n: number; resolve: () => void };
    const taken = new Promise<void>((resolve) => {
      entry = { n, resolve };
    });
    this.queue.push(entry);
    this.drain();
    return {
      taken,
      cancel: () => {
        const i = this.queue.indexOf(entry);
        if (i < 0) return false;
        this.queue.splice(i, 1);
        // The head may have been the one blocking smaller requests behind it.
        this.drain();
        return true;
      },
    };
  }

  release(n: number): void {
    this.used -= n;
    this.drain();
  }

  /** Requests waiting for bytes. */
  get waiting(): number {
    return this.queue.length;
  }

  private fits(n: number): boolean {
    return this.used + n <= this.limit || this.used === 0;
  }

  private add(n: number): void {
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
  }

  private drain(): void {
    for (let head = this.queue[0]; head !== undefined && this.fits(head.n); head = this.queue[0]) {
      this.queue.shift();
      this.add(head.n);
      head.resolve();
    }
  }
}
