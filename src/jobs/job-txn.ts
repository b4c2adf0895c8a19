// Jobs that end together (QEMU's JobTxn: a `transaction` with completion-mode grouped). A job
// whose run succeeds waits (WAITING) for the others; once all have, each goes PENDING and is
// finalized, newest first. When one fails or is cancelled, every other is cancelled, then each,
// newest first, is aborted and concludes once its run has stopped: the order of QEMU's events.
import { BlockError } from '../errors.js';
import type { Job, JobGroup } from './job.js';

export class JobTxn implements JobGroup {
  /** Newest first, as QEMU keeps them. */
  private readonly jobs: Job[] = [];
  /** Jobs whose run has ended, with its error (undefined: it succeeded). */
  private readonly ended = new Map<Job, unknown>();
  /** Wakes the abort waiting for a job's run to stop. */
  private readonly stopped = new Map<Job, () => void>();
  private aborting = false;

  /** Adds a job (before it starts); it hands the end of its run to this group. */
  add(job: Job): void {
    this.jobs.unshift(job);
    job.joinGroup(this);
  }

  async runEnded(job: Job, error: unknown): Promise<void> {
    this.ended.set(job, error);
    // While aborting, the abort takes each job in its turn (its ABORTING then, not before).
    if (this.aborting) return this.stopped.get(job)?.();
    if (error !== undefined) return this.abort(job, error);
    job.advanceForGroup('waiting');
    if (this.jobs.some((j) => !this.ended.has(j))) return;
    for (const j of this.jobs) j.advanceForGroup('pending');
    for (const j of this.jobs) await j.endForGroup();
  }

  private async abort(failed: Job, error: unknown): Promise<void> {
    this.aborting = true;
    failed.failForGroup(error);
    const others = this.jobs.filter((j) => j !== failed);
    for (const j of others) j.cancelForGroup();
    // Newest first, each ended once its run has stopped (QEMU job_completed_txn_abort).
    for (const j of this.jobs) {
      if (j !== failed) {
        if (!this.ended.has(j) && j.hasStarted) await new Promise<void>((resolve) => this.stopped.set(j, resolve));
        j.failForGroup(new BlockError('ECANCELED', 'Operation canceled'));
      }
      await j.endForGroup();
    }
  }
}
