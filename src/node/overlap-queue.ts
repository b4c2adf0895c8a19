/** A write in progress over [start, end), settled by `done`. */
interface TrackedWrite {
  start: number;
  end: number;
  done: Promise<void>;
}

/**
 * Orders overlapping writes in their order of arrival (QEMU: serialising requests) when
 * read-modify-write can happen, so an RMW never reads old data around a concurrent write
 * and then overwrites it, and a later write is never overtaken by an earlier one still waiting.
 */
export class OverlapQueue {
  private readonly tracked: TrackedWrite[] = [];

  /** Runs `op` once every write that arrived earlier over [start, end) has settled. */
  async run(start: number, end: number, op: () => Promise<void>): Promise<void> {
    const tracked = this.tracked;
    const earlier = tracked.filter((t) => t.start < end && start < t.end);
    let finish!: () => void;
    const entry: TrackedWrite = { start, end, done: new Promise<void>((r) => (finish = r)) };
    tracked.push(entry);
    try {
      for (const t of earlier) await t.done;
      await op();
    } finally {
      tracked.splice(tracked.indexOf(entry), 1);
      finish();
    }
  }
}
