// The event loop as the VirtualClock needs it: a loop turn, nextTick, and a cheap way to tell
// whether an immediate was queued. Node's immediate list is private, so the one read of a
// private field (`_idleNext`) lives here, in the platform layer, behind a public fallback.

/** One event-loop turn: microtasks, nextTicks and the immediates queued so far all run first. */
export function loopTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Node's nextTick, taken once: the global `process` is a getter called on every use, and a timer
 * run calls nextTick once per timer. (The browser build's process shim provides it too.)
 */
export const nextTick: (callback: () => void) => void = process.nextTick;

const noop = () => {};

/**
 * Tells whether a setImmediate callback was queued since it was armed, for the price of a
 * property read: it queues a marker immediate (unref'd, never run) and looks at the marker's
 * link to the next entry of Node's immediate list (`_idleNext`, set when one is appended after
 * it). Where that field does not exist (another runtime), it asks
 * process.getActiveResourcesInfo(), which costs about as much as firing a timer.
 */
export class ImmediateWatch {
  private marker: (NodeJS.Immediate & { _idleNext?: unknown }) | null = null;

  arm(): void {
    this.marker = setImmediate(noop).unref();
  }

  disarm(): void {
    if (this.marker !== null) clearImmediate(this.marker);
    this.marker = null;
  }

  /** A setImmediate was queued since arm() (and may be waiting). */
  get pending(): boolean {
    const m = this.marker;
    if (m !== null && '_idleNext' in m) return m._idleNext != null;
    return process.getActiveResourcesInfo().includes('Immediate');
  }

  /** Lets the queued immediates run (one event-loop turn), then watches again. */
  async yieldTurn(): Promise<void> {
    this.disarm();
    await loopTurn();
    this.arm();
  }
}
