import type { MemoryBudget } from './memory-budget.js';

/**
 * One connection's share of the server-wide {@link MemoryBudget}: bytes its requests hold (WRITE
 * payloads, READ replies) from when they are read until their replies are written. A count, not a
 * record per request; once the connection has closed, everything it held has gone back and later
 * give-backs do nothing, so each byte returns exactly once.
 */
export class ConnectionBudget {
  private held = 0;
  private closed = false;
  /** Ends a wait for bytes when the connection stops. */
  private abortWait: (() => void) | null = null;

  constructor(private readonly budget: MemoryBudget) {}

  /** Takes `n` bytes if they are free now (false: {@link reserve} waits for them). */
  tryTake(n: number): boolean {
    if (!this.budget.tryTake(n)) return false;
    this.keep(n);
    return true;
  }

  /**
   * Waits for `n` bytes; while the budget is spent the connection reads nothing more (its socket
   * pauses). False when `stopped()` says the connection stopped meanwhile (nothing is then held).
   */
  async reserve(n: number, stopped: () => boolean): Promise<boolean> {
    if (!this.budget.tryTake(n)) {
      const w = this.budget.wait(n);
      let aborted = false;
      await Promise.race([
        w.taken,
        new Promise<void>((resolve) => {
          this.abortWait = () => {
            aborted = true;
            resolve();
          };
        }),
      ]);
      this.abortWait = null;
      if (aborted && w.cancel()) return false;
      // Taken (perhaps just as the wait was cut short): the bytes are ours to hold or give back.
    }
    if (stopped() || this.closed) {
      this.budget.release(n);
      return false;
    }
    this.keep(n);
    return true;
  }

  /** Gives back `n` bytes held for a request whose reply has been written (or never will be). */
  giveBack(n: number): void {
    if (n === 0 || this.closed) return;
    this.held -= n;
    this.budget.release(n);
  }

  /** Ends a wait in {@link reserve} (the connection stops). */
  cancelWait(): void {
    const abort = this.abortWait;
    this.abortWait = null;
    abort?.();
  }

  /** The socket has closed: replies that will never be written give their bytes back, a pending wait leaves the queue. */
  close(): void {
    if (!this.closed) {
      this.closed = true;
      this.budget.release(this.held);
      this.held = 0;
    }
    this.cancelWait();
  }

  private keep(n: number): void {
    if (this.closed) this.budget.release(n);
    else this.held += n;
  }
}
