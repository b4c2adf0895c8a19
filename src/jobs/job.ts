import { EventEmitter } from 'eventemitter3';
import type { Clock, ClockTimer } from '../clock.js';
import { BlockError, isBlockError } from '../errors.js';
import { acceptsVerb, canTransition, isReadyStatus, type JobErrorPolicy, type JobStatus, type JobType, type JobVerb } from './job-states.js';
import { RateLimit } from './rate-limit.js';

export type { JobErrorPolicy, JobStatus, JobType, JobVerb } from './job-states.js';

/**
 * What a kind of job does (QEMU's JobDriver). `run` does the work, calling
 * {@link Job.pausePoint} / {@link Job.throttle} between steps and returning early once
 * {@link Job.isCancelled}; the hooks run after it, in QEMU's order: prepare (may still fail the
 * job), then commit or abort, then clean.
 */
export interface JobWork {
  /** The job's QAPI type. */
  readonly type: JobType;
  /** The work itself; resolves when done, rejects with the reason it failed. */
  run(job: Job): Promise<void>;
  /** job-complete while READY: finish now (mirror converges and pivots). Absent: the job cannot be completed. */
  complete?(job: Job): void;
  /**
   * A cancel request: returns whether it really cancels (true, the default) or, as a soft
   * cancel of a READY mirror, ends the job successfully without its final step.
   */
  cancel?(job: Job, force: boolean): boolean;
  /** Before commit; a failure here turns the job into a failed one (abort runs). */
  prepare?(job: Job): Promise<void>;
  /** The job succeeded: make its result visible (e.g. a pivot). */
  commit?(job: Job): Promise<void> | void;
  /** The job failed or was cancelled: undo what must not stay. */
  abort?(job: Job): Promise<void> | void;
  /** Either way, last: release what the job held. */
  clean?(job: Job): Promise<void> | void;
}

/** How a job starts. */
export interface JobOptions {
  /** Bytes per second the job's I/O may move; 0: unlimited. */
  speed?: number;
  /** Finalize on its own when done (default true); false: waits in PENDING for {@link Job.finalize}. */
  autoFinalize?: boolean;
  /** Disappear once concluded (default true); false: stays CONCLUDED until {@link Job.dismiss}. */
  autoDismiss?: boolean;
}

/**
 * A group of jobs that end together (QEMU's JobTxn, a transaction's completion-mode grouped;
 * job-txn.ts): a job in one hands the end of its run to the group instead of finishing alone.
 */
export interface JobGroup {
  /** The job's run ended (`error` set if it failed or was cancelled); the group finishes it. */
  runEnded(job: Job, error: unknown): Promise<void>;
}

/** Payload of a job's `io-error` event (QEMU BLOCK_JOB_ERROR). */
export interface JobIoErrorEvent {
  operation: 'read' | 'write';
  action: 'ignore' | 'report' | 'stop';
  error: unknown;
}

/** Typed events of a job; `status-change` is QEMU's JOB_STATUS_CHANGE, the others its BLOCK_JOB_* events. */
export interface JobEvents {
  'status-change': (status: JobStatus) => void;
  ready: () => void;
  pending: () => void;
  /** The job ended without being cancelled; `error` is set when it failed. */
  completed: (error: string | undefined) => void;
  cancelled: () => void;
  'io-error': (event: JobIoErrorEvent) => void;
}

/** strerror() of the codes a job ends with, as QEMU reports them. */
const STRERROR: Readonly<Record<string, string>> = {
  EIO: 'Input/output error',
  ENOSPC: 'No space left on device',
  ECANCELED: 'Operation canceled',
  EROFS: 'Read-only file system',
  EINVAL: 'Invalid argument',
  ENOMEM: 'Cannot allocate memory',
  EPERM: 'Operation not permitted',
  ENOTSUP: 'Operation not supported',
};

/** A job's error as QEMU words it: strerror of a plain I/O error code, otherwise the message. */
export function jobErrorText(e: unknown): string {
  if (isBlockError(e)) return e.code === 'EIO' || e.code === 'ENOSPC' || e.code === 'ECANCELED' ? STRERROR[e.code] : e.message;
  return e instanceof Error ? e.message : String(e);
}

/**
 * A long-running operation (QEMU's Job and BlockJob): QEMU's statuses and verbs, pause points,
 * a speed limit, progress, I/O error policies, and the finalization order. Made by the layer's
 * job registry; its work is a {@link JobWork}.
 */
export class Job extends EventEmitter<JobEvents> {
  /** Unique id (QMP job-id; also the `device` of block job events). */
  readonly id: string;
  /** QAPI JobType. */
  readonly type: JobType;
  readonly autoFinalize: boolean;
  readonly autoDismiss: boolean;
  /** Bytes done so far, and the current estimate of all there is to do (QEMU progress_current/total). */
  readonly progress = { current: 0, total: 0 };
  /** I/O status of a block job: set by a `stop` or `enospc` error policy, cleared on resume. */
  ioStatus: 'ok' | 'failed' | 'nospace' = 'ok';
  private currentStatus: JobStatus = 'undefined';
  private speedValue = 0;
  private readonly limit = new RateLimit();
  /** Pause requests outstanding (a user pause is one of them); the job starts paused until start(). */
  private pauseCount = 1;
  private userPausedFlag = false;
  private pausedFlag = true;
  private busyFlag = false;
  private cancelRequestedFlag = false;
  /** The job's end under way (finalize or abort), so that it runs once. */
  private ending: Promise<void> | null = null;
  private forceCancelFlag = false;
  private started = false;
  /** The run has ended and finalization was handed on (QEMU deferred_to_main_loop). */
  private deferred = false;
  private failure: unknown = undefined;
  private errorText: string | undefined;
  /** Wakes the run where it waits (a pause, a sleep, a yield). */
  private wake: (() => void) | null = null;
  private timer: ClockTimer | null = null;
  private readonly ended: Promise<void>;
  private endedResolve!: () => void;
  /** The group this job ends with, if any (set before it starts). */
  private group: JobGroup | null = null;

  constructor(
    id: string,
    private readonly work: JobWork,
    private readonly clock: Clock,
    options: JobOptions = {},
  ) {
    super();
    this.id = id;
    this.type = work.type;
    this.autoFinalize = options.autoFinalize ?? true;
    this.autoDismiss = options.autoDismiss ?? true;
    this.ended = new Promise((resolve) => (this.endedResolve = resolve));
    this.setSpeedNow(options.speed ?? 0);
    this.transition('created');
  }

  /** QAPI JobStatus. */
  get status(): JobStatus {
    return this.currentStatus;
  }

  /** Bytes per second the job may move (0: unlimited). */
  get speed(): number {
    return this.speedValue;
  }

  /** The job is working (not waiting at a pause point, a sleep or a yield). */
  get busy(): boolean {
    return this.busyFlag;
  }

  /** The job is stopped at a pause point. */
  get paused(): boolean {
    return this.pausedFlag;
  }

  /** The user (or a `stop` error policy) paused it. */
  get userPaused(): boolean {
    return this.userPausedFlag;
  }

  /** Cancelled for real (QEMU job_is_cancelled): the run should stop and the job ends cancelled. */
  get isCancelled(): boolean {
    return this.forceCancelFlag;
  }

  /** A cancel was asked, even a soft one of a READY mirror (QEMU job_cancel_requested). */
  get cancelRequested(): boolean {
    return this.cancelRequestedFlag;
  }

  /** READY or STANDBY. */
  get isReady(): boolean {
    return isReadyStatus(this.currentStatus);
  }

  /** Why the job failed (QEMU's wording), once it has. */
  get error(): string | undefined {
    return this.errorText;
  }

  /** The error the job failed with, as thrown. */
  get failureCause(): unknown {
    return this.failure;
  }

  /** Starts the run (QEMU job_start); called once by the registry. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.pauseCount--;
    this.pausedFlag = false;
    this.busyFlag = true;
    this.transition('running');
    void this.runWork();
  }

  /** Resolves once the job has concluded (successfully or not); never rejects. */
  whenConcluded(): Promise<void> {
    return this.ended;
  }

  /** Resolves when the job completed successfully; rejects with its error when it failed or was cancelled. */
  async wait(): Promise<void> {
    await this.ended;
    if (this.failure !== undefined) throw this.failure;
  }

  // ---- verbs (the QMP commands) ----

  /** job-pause: the job stops at its next pause point. */
  pause(): void {
    this.checkVerb('pause');
    if (this.userPausedFlag) throw new BlockError('EINVAL', 'Job is already paused');
    this.userPausedFlag = true;
    this.pauseCount++;
  }

  /** job-resume. */
  resume(): void {
    if (!this.userPausedFlag || this.pauseCount <= 0) throw new BlockError('EINVAL', "Can't resume a job that was not paused");
    this.checkVerb('resume');
    this.userPausedFlag = false;
    this.ioStatus = 'ok';
    this.pauseCount--;
    if (this.pauseCount === 0 && this.timer === null) this.enter();
  }

  /** block-job-set-speed. */
  setSpeed(bytesPerSecond: number): void {
    this.checkVerb('set-speed');
    if (!Number.isSafeInteger(bytesPerSecond) || bytesPerSecond < 0) throw new BlockError('EINVAL', "Parameter 'speed' expects a non-negative value", { field: 'speed' });
    this.setSpeedNow(bytesPerSecond);
    // A sleeping job re-computes its delay with the new speed.
    this.enter();
  }

  /** job-complete: a READY job finishes (mirror pivots). */
  complete(): void {
    this.checkVerb('complete');
    if (this.pauseCount > 0 || this.forceCancelFlag || this.work.complete === undefined) {
      throw new BlockError('EINVAL', `The active block job '${this.id}' cannot be completed`);
    }
    this.work.complete(this);
  }

  /** job-cancel (`force`: also a READY mirror is cancelled rather than completed without pivot). */
  cancel(force = false): void {
    this.checkVerb('cancel');
    this.cancelNow(force);
  }

  /** job-finalize: a PENDING job (auto-finalize off) commits or aborts. */
  async finalize(): Promise<void> {
    this.checkVerb('finalize');
    await this.finalizeNow();
  }

  /** job-dismiss: a CONCLUDED job (auto-dismiss off) goes away. */
  dismiss(): void {
    this.checkVerb('dismiss');
    this.dismissNow();
  }

  // ---- for a group (job-txn.ts) ----

  /** Makes the job end with `group` (before it starts). */
  joinGroup(group: JobGroup): void {
    this.group = group;
  }

  /** Whether the job has started running. */
  get hasStarted(): boolean {
    return this.started;
  }

  /** The group cancels the job (force: it ends as cancelled, whatever it was doing). */
  cancelForGroup(): void {
    this.cancelRequestedFlag = true;
    this.forceCancelFlag = true;
    if (this.userPausedFlag) {
      this.userPausedFlag = false;
      this.pauseCount--;
    }
    if (!this.deferred) this.enter();
  }

  /** The group fails the job (ABORTING): its error, or cancelled when it was cancelled. */
  failForGroup(error: unknown): void {
    if (this.currentStatus !== 'aborting') this.fail(this.forceCancelFlag ? new BlockError('ECANCELED', 'Operation canceled') : error);
  }

  /** The group moves the job on (WAITING for the others, then PENDING). */
  advanceForGroup(to: 'waiting' | 'pending'): void {
    this.transition(to);
  }

  /** The group ends the job: finalized (commit) when it succeeded, else aborted; it concludes. */
  async endForGroup(): Promise<void> {
    if (this.currentStatus === 'aborting') await this.abortNow();
    else await this.finalizeNow();
  }

  // ---- for the work ----

  /** Stops here while the job is paused (QEMU job_pause_point). */
  async pausePoint(): Promise<void> {
    if (this.pauseCount === 0 || this.forceCancelFlag) return;
    const status = this.currentStatus;
    this.transition(status === 'ready' ? 'standby' : 'paused');
    this.pausedFlag = true;
    while (this.pauseCount > 0 && !this.forceCancelFlag) await this.yieldNow();
    this.pausedFlag = false;
    this.transition(status);
  }

  /** Waits `ns` (woken early by a cancel, a complete or a speed change), then a pause point. */
  async sleep(ns: number): Promise<void> {
    if (this.forceCancelFlag) return;
    if (this.pauseCount === 0) {
      this.timer = this.clock.setTimer(this.clock.now() + Math.max(0, ns), () => {
        this.timer = null;
        this.enter();
      });
      await this.yieldNow();
    }
    await this.pausePoint();
  }

  /** Waits until something wakes the job (a complete, a cancel, {@link enter}), then a pause point (QEMU job_yield). */
  async idle(): Promise<void> {
    if (this.forceCancelFlag) return;
    if (this.pauseCount === 0) await this.yieldNow();
    await this.pausePoint();
  }

  /** Wakes a job waiting in {@link idle} or {@link sleep} (QEMU job_enter). */
  enter(): void {
    if (this.timer !== null) {
      this.timer.cancel();
      this.timer = null;
    }
    const wake = this.wake;
    if (wake === null) return;
    this.wake = null;
    this.busyFlag = true;
    wake();
  }

  /** Counts `bytes` against the speed and waits as long as the speed asks (at least a pause point). */
  async throttle(bytes: number): Promise<void> {
    const delay = this.limit.account(this.clock.now(), bytes);
    if (delay > 0) await this.sleep(delay);
    else await this.pausePoint();
  }

  /** Adds done work. */
  addProgress(bytes: number): void {
    this.progress.current += bytes;
  }

  /** Sets what is left to do (QEMU job_progress_set_remaining). */
  setRemaining(bytes: number): void {
    this.progress.total = this.progress.current + bytes;
  }

  /** Adds to what is left to do. */
  addRemaining(bytes: number): void {
    this.progress.total += bytes;
  }

  /** The job has converged and waits for job-complete (QEMU job_transition_to_ready). */
  transitionToReady(): void {
    this.transition('ready');
    this.emit('ready');
  }

  /**
   * An I/O error under a policy (QEMU block_job_error_action): emits `io-error`; `report`
   * rethrows, `ignore` returns 'ignore' (skip the piece), `stop` pauses the job as a user pause
   * and returns 'retry' once it is resumed. `enospc` stops on ENOSPC and reports anything else.
   */
  async onIoError(policy: JobErrorPolicy, operation: 'read' | 'write', error: unknown): Promise<'retry' | 'ignore'> {
    const nospace = isBlockError(error, 'ENOSPC');
    const action = policy === 'ignore' ? 'ignore' : policy === 'stop' || (policy === 'enospc' && nospace) ? 'stop' : 'report';
    this.emit('io-error', { operation, action, error });
    if (action === 'report') throw error;
    if (action === 'ignore') return 'ignore';
    if (!this.userPausedFlag) {
      this.userPausedFlag = true;
      this.pauseCount++;
    }
    this.ioStatus = nospace ? 'nospace' : 'failed';
    await this.pausePoint();
    return 'retry';
  }

  // ---- internals ----

  private setSpeedNow(speed: number): void {
    this.speedValue = speed;
    this.limit.setSpeed(speed);
  }

  private checkVerb(verb: JobVerb): void {
    if (!acceptsVerb(this.currentStatus, verb)) {
      throw new BlockError('EINVAL', `Job '${this.id}' in state '${this.currentStatus}' cannot accept command verb '${verb}'`);
    }
  }

  private transition(to: JobStatus): void {
    const from = this.currentStatus;
    if (!canTransition(from, to)) throw new Error(`job ${this.id}: illegal transition ${from} -> ${to}`);
    this.currentStatus = to;
    if (from !== to) this.emit('status-change', to);
  }

  private yieldNow(): Promise<void> {
    this.busyFlag = false;
    return new Promise((resolve) => (this.wake = resolve));
  }

  private cancelNow(force: boolean): void {
    if (this.currentStatus === 'concluded') {
      this.dismissNow();
      return;
    }
    // Finalizing or aborting already: QEMU does that without yielding, so no cancel can come between.
    if (this.ending !== null) return;
    const really = this.work.cancel ? this.work.cancel(this, force) : true;
    if (this.userPausedFlag) {
      this.userPausedFlag = false;
      this.pauseCount--;
    }
    this.cancelRequestedFlag = true;
    this.forceCancelFlag ||= really;
    if (!this.started) {
      void this.completed(undefined);
    } else if (this.deferred) {
      // The run is over; a PENDING job aborts now.
      if (this.currentStatus === 'pending' || this.currentStatus === 'waiting') void this.abortNow();
    } else {
      this.enter();
    }
  }

  private async runWork(): Promise<void> {
    let error: unknown;
    try {
      await this.pausePoint();
      await this.work.run(this);
    } catch (e) {
      error = e ?? new BlockError('EIO', `job ${this.id} failed`);
    }
    this.busyFlag = false;
    this.deferred = true;
    await this.completed(error);
  }

  /** QEMU job_completed: a failure (or a real cancel) aborts; success waits, then finalizes unless manual. */
  private async completed(error: unknown): Promise<void> {
    if (error === undefined && this.forceCancelFlag) error = new BlockError('ECANCELED', 'Operation canceled');
    if (this.group !== null) return this.group.runEnded(this, error);
    if (error !== undefined) {
      this.fail(error);
      await this.abortNow();
      return;
    }
    this.transition('waiting');
    this.transition('pending');
    if (!this.autoFinalize) {
      this.emit('pending');
      return;
    }
    await this.finalizeNow();
  }

  private fail(error: unknown): void {
    this.failure ??= error;
    this.errorText ??= jobErrorText(error);
    this.transition('aborting');
  }

  /** Aborts, once: a job's end (abort or finalize) runs one time however many callers ask for it. */
  private abortNow(): Promise<void> {
    this.ending ??= this.abortSteps();
    return this.ending;
  }

  private async abortSteps(): Promise<void> {
    if (this.currentStatus !== 'aborting') this.fail(new BlockError('ECANCELED', 'Operation canceled'));
    await this.settleHook(this.work.abort);
    await this.concludeAfterHooks();
  }

  /** Finalizes (commit, or abort when prepare fails), once; see {@link abortNow}. */
  private finalizeNow(): Promise<void> {
    this.ending ??= this.finalizeSteps();
    return this.ending;
  }

  private async finalizeSteps(): Promise<void> {
    if (this.work.prepare) {
      try {
        await this.work.prepare(this);
      } catch (e) {
        this.fail(e);
        await this.settleHook(this.work.abort);
        await this.concludeAfterHooks();
        return;
      }
    }
    try {
      await this.work.commit?.(this);
    } catch (e) {
      // QEMU's commit cannot fail; ours reports it but the job still concludes.
      this.failure ??= e;
      this.errorText ??= jobErrorText(e);
    }
    await this.concludeAfterHooks();
  }

  private async settleHook(hook: ((job: Job) => Promise<void> | void) | undefined): Promise<void> {
    try {
      await hook?.call(this.work, this);
    } catch {
      // An abort that fails leaves the job failed with its first error.
    }
  }

  private async concludeAfterHooks(): Promise<void> {
    await this.settleHook(this.work.clean);
    if (this.started) {
      if (this.forceCancelFlag) this.emit('cancelled');
      else this.emit('completed', this.errorText);
    }
    this.transition('concluded');
    this.endedResolve();
    if (this.autoDismiss || !this.started) this.dismissNow();
  }

  private dismissNow(): void {
    this.busyFlag = false;
    this.pausedFlag = false;
    this.deferred = true;
    this.transition('null');
  }
}
