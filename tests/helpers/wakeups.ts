// Waiting in tests for something a stream delivers (a guest's serial text, a QMP event): woken on
// every change instead of polling, with one deadline for the whole wait.

export class Wakeups {
  private readonly waiters = new Set<() => void>();

  /** Something changed: every waiter looks again. */
  wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /**
   * Resolves once `test()` holds. Rejects with `stopped()`'s error as soon as it gives one (the
   * stream ended), or with `late()`'s once timeoutMs passed.
   */
  async until(test: () => boolean, timeoutMs: number, stopped: () => Error | undefined, late: () => Error): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!test()) {
      const stop = stopped();
      if (stop !== undefined) throw stop;
      const left = deadline - Date.now();
      if (left <= 0) throw late();
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.waiters.add(done);
      });
    }
  }
}
