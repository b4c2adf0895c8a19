/**
 * A FIFO mutex (QEMU: the qcow2 CoMutex s->lock): metadata changes (allocation, L2 and refcount
 * updates, cache write-back) run one at a time; data I/O runs outside it.
 */
export class AsyncLock {
  private held = false;
  private readonly waiters: (() => void)[] = [];

  /** Resolves when the caller holds the lock. */
  acquire(): Promise<void> {
    if (!this.held) {
      this.held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Hands the lock to the next waiter, in arrival order. */
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.held = false;
  }
}

interface InFlight {
  start: number;
  end: number;
  done: Promise<void>;
  finish: () => void;
}

/**
 * Orders requests that touch the same guest clusters (QEMU: in-flight allocations and
 * serialising requests): a request waits for every earlier one whose cluster range overlaps
 * its own, so two writes never allocate one cluster twice and overlapping writes land in
 * their order of arrival. Requests on other clusters run in parallel.
 */
export class ClusterRangeQueue {
  private readonly inFlight: InFlight[] = [];

  /** Waits for the earlier overlapping requests; the returned ticket must be passed to {@link leave}. */
  async enter(start: number, end: number): Promise<InFlight> {
    let finish!: () => void;
    const done = new Promise<void>((r) => (finish = r));
    const me: InFlight = { start, end, done, finish };
    const earlier: Promise<void>[] = [];
    for (const t of this.inFlight) if (t.start < end && start < t.end) earlier.push(t.done);
    this.inFlight.push(me);
    for (const p of earlier) await p;
    return me;
  }

  /** Whether a request in the queue (waiting or running) overlaps [start, end). */
  overlaps(start: number, end: number): boolean {
    for (const t of this.inFlight) if (t.start < end && start < t.end) return true;
    return false;
  }

  /** Ends a request: later overlapping ones may go. */
  leave(ticket: InFlight): void {
    const i = this.inFlight.indexOf(ticket);
    if (i >= 0) this.inFlight.splice(i, 1);
    ticket.finish();
  }
}
