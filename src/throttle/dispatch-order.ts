/** Settled once: `.then` on it queues a microtask at once, like queueMicrotask, without Node's per-call AsyncResource. */
const settled = Promise.resolve();

/**
 * Keeps requests in order across an admission that resolves a waiting request's promise: that
 * request resumes one microtask later, so a new request admitted at once in the same tick
 * (after a drain, a removal of limits or a move to another group) must yield one microtask too,
 * or it would reach the driver first.
 */
export class DispatchOrder {
  /** True from a release until the released requests have resumed. */
  pending = false;
  /** Made on the first release: a drive whose requests never wait (or never come) pays nothing for it. */
  private reset: (() => void) | null = null;

  /** A waiting request was admitted (its promise resolved). */
  released(): void {
    if (this.pending) return;
    this.pending = true;
    if (this.reset === null) {
      this.reset = () => {
        this.pending = false;
      };
    }
    void settled.then(this.reset);
  }
}
