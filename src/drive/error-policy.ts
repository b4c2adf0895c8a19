// What a drive does with a request the node failed (QEMU: rerror/werror, blk_error_action):
// fail it, complete it anyway, or hold it and pause the drive until resume().
import type { EventEmitter } from 'eventemitter3';
import type { BlockError } from '../errors.js';
import type { ErrorAction } from '../options/error-policy.js';
import type { DriveEvents, IoStatus } from './events.js';
import type { HoldGate } from './gate.js';
import { type DriveRequest, OP_NAMES, OP_READ, type RequestValue } from './request.js';

export type { ErrorAction };

/** A drive's error policy: `rerror` for reads, `werror` for writes, write-zeroes, discard and flush. */
export interface ErrorPolicy {
  /** What to do when a read fails (QEMU `rerror`); default `report`. */
  rerror?: ErrorAction;
  /** What to do when a write, write-zeroes, discard or flush fails (QEMU `werror`); default `report`. */
  werror?: ErrorAction;
}

/** The outcome of a failed request. */
export type ErrorOutcome = 'report' | 'ignore' | 'stop';

/** A drive's error policy at work: decides, reports (`io-error`), parks failed requests and pauses. */
export class ErrorPolicyRules {
  private readonly rerror: ErrorAction;
  private readonly werror: ErrorAction;
  /** Whether a failed request can be parked (a `stop` or `enospc` policy): only then is its arrival number kept while it is queued. */
  readonly canPark: boolean;
  private parked: DriveRequest[] = [];
  /** QEMU's io-status. */
  status: IoStatus = 'ok';

  constructor(
    policy: ErrorPolicy,
    private readonly events: EventEmitter<DriveEvents>,
    private readonly gate: HoldGate,
    private readonly device: string,
    private readonly nodeName: string,
  ) {
    this.rerror = policy.rerror ?? 'report';
    this.werror = policy.werror ?? 'report';
    this.canPark = this.rerror === 'stop' || this.rerror === 'enospc' || this.werror === 'stop' || this.werror === 'enospc';
  }

  /** Requests parked now. */
  get size(): number {
    return this.parked.length;
  }

  /** What to do with a request that failed with `error` (a canceled request is reported). */
  decide(r: DriveRequest, error: BlockError): ErrorOutcome {
    if (error.code === 'ECANCELED') return 'report';
    const policy = r.op === OP_READ ? this.rerror : this.werror;
    if (policy === 'enospc') return error.code === 'ENOSPC' ? 'stop' : 'report';
    return policy;
  }

  /** Emits `io-error` for a failed request (not for a canceled one: that was the caller's doing). */
  emitIoError(r: DriveRequest, error: BlockError, action: ErrorOutcome): void {
    if (error.code !== 'ECANCELED' && this.events.listenerCount('io-error') > 0) {
      this.events.emit('io-error', {
        device: this.device,
        nodeName: this.nodeName,
        operation: OP_NAMES[r.op],
        action,
        nospace: error.code === 'ENOSPC',
        reason: error.message,
        offset: r.offset,
        length: r.length,
        error,
      });
    }
  }

  /** Holds a failed request under a `stop` policy and pauses the drive (QEMU: the VM stops on an I/O error). */
  park(r: DriveRequest, error: BlockError): Promise<RequestValue> {
    r.error = error;
    return new Promise((resolve, reject) => {
      r.resolve = resolve;
      r.reject = reject;
      this.parked.push(r);
      if (this.gate.paused) return;
      this.gate.paused = true;
      this.status = error.code === 'ENOSPC' ? 'nospace' : 'failed';
      this.gate.update();
      if (this.events.listenerCount('paused') > 0) this.events.emit('paused', { reason: 'io-error', ioStatus: this.status, error });
    });
  }

  /**
   * Ends the pause: the parked requests, in their order of arrival. The io-status is left to the
   * caller (resume clears it, close keeps it); so is reopening the gate.
   */
  unpause(): DriveRequest[] {
    const parked = this.parked.sort((a, b) => a.seq - b.seq);
    this.parked = [];
    this.gate.paused = false;
    return parked;
  }
}
