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

  /** Takes the lock if it is free (then no one waits either: the order holds); false when it is held. */
  tryAcquire(): boolean {
    if (this.held) return false;
    this.held = true;
    return true;
  }

  /** Hands the lock to the next waiter, in arrival order. */
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.held = false;
  }
}

/** A request in a {@link ClusterRangeQueue}: its cluster range, until it leaves. */
export interface RangeTicket {
  readonly start: number;
  readonly end: number;
  /** Its index in the queue's list while it is there (-1 once it left), for an O(1) removal. */
  at: number;
  /** Called when it leaves: one per later overlapping request that waits for it (made only then). */
  onLeave: (() => void)[] | null;
}

/**
 * Orders requests that touch the same guest clusters (QEMU: in-flight allocations and
 * serialising requests): a request waits for every earlier one whose cluster range overlaps
 * its own, so two writes never allocate one cluster twice and overlapping writes land in
 * their order of arrival. Requests on other clusters run in parallel.
 *
 * Entering takes the request's place at once (arrival order decides); only a request that
 * overlaps an earlier one gets a promise to wait on. Leaving is O(1): the order of the list
 * does not matter, since a new request looks at every earlier one in it.
 */
export class ClusterRangeQueue {
  private readonly inFlight: RangeTicket[] = [];

  /**
   * Takes the request's place in the queue: its ticket when no earlier request overlaps
   * [start, end) (it may go now), else a promise of the ticket that settles once every earlier
   * overlapping request has left. The ticket must be passed to {@link leave}.
   */
  enter(start: number, end: number): RangeTicket | Promise<RangeTicket> {
    const me: RangeTicket = { start, end, at: this.inFlight.length, onLeave: null };
    let pending = 0;
    for (const t of this.inFlight) if (t.start < end && start < t.end) pending++;
    this.inFlight.push(me);
    if (pending === 0) return me;
    return new Promise((resolve) => {
      const one = () => {
        if (--pending === 0) resolve(me);
      };
      // Only the earlier ones (the list held `me.at` of them before `me` joined).
      for (let i = 0; i < me.at; i++) {
        const t = this.inFlight[i]!;
        if (!(t.start < end && start < t.end)) continue;
        if (t.onLeave === null) t.onLeave = [one];
        else t.onLeave.push(one);
      }
    });
  }

  /** Whether a request in the queue (waiting or running) overlaps [start, end). */
  overlaps(start: number, end: number): boolean {
    for (const t of this.inFlight) if (t.start < end && start < t.end) return true;
    return false;
  }

  /** Ends a request: later overlapping ones may go. */
  leave(ticket: RangeTicket): void {
    const i = ticket.at;
    if (i < 0) return;
    ticket.at = -1;
    const last = this.inFlight.pop()!;
    if (last !== ticket) {
      this.inFlight[i] = last;
      last.at = i;
    }
    const waiting = ticket.onLeave;
    if (waiting === null) return;
    ticket.onLeave = null;
    for (const f of waiting) f();
  }
}
