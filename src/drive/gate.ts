// The drive's gate (QEMU: a BlockBackend's quiesce counter and its queued requests): while a
// drain is in progress or an error policy paused the drive, new requests wait here, in order.
import type { BlockError } from '../errors.js';
import type { DriveRequest, RequestValue } from './request.js';

/** What the gate needs of its drive: where released requests go, and the error of an aborted one. */
export interface GateOwner {
  /** Sends a request the gate let go on (its caller's promise functions are in the record). */
  release(r: DriveRequest): void;
  /** The ECANCELED error of a held request whose signal aborted. */
  canceled(r: DriveRequest, reason: unknown): BlockError;
}

/** Holds a drive's new requests while it is drained or paused; lets them go, in order, when that ends. */
export class HoldGate {
  /** Nested drains in progress (QEMU drained sections). */
  drains = 0;
  /** A `stop` error policy paused the drive. */
  paused = false;
  /** True while drained or paused: new requests are held. */
  holding = false;
  private held: DriveRequest[] = [];

  constructor(private readonly owner: GateOwner) {}

  /** Requests held now. */
  get size(): number {
    return this.held.length;
  }

  /** Holds a request until the gate opens; an abort meanwhile rejects it (ECANCELED), untouched. */
  hold(r: DriveRequest): Promise<RequestValue> {
    return new Promise((resolve, reject) => {
      r.resolve = resolve;
      r.reject = reject;
      const signal = r.signal;
      if (signal) {
        r.onAbort = () => {
          if (r.settled) return;
          r.settled = true;
          const at = this.held.indexOf(r);
          if (at >= 0) this.held.splice(at, 1);
          reject(this.owner.canceled(r, signal.reason));
        };
        signal.addEventListener('abort', r.onAbort, { once: true });
      }
      this.held.push(r);
    });
  }

  /** Recomputes whether new requests are held; when that ends, lets the held ones go in order. */
  update(): void {
    this.holding = this.drains > 0 || this.paused;
    while (!this.holding && this.held.length > 0) {
      const batch = this.held;
      this.held = [];
      for (let i = 0; i < batch.length; i++) {
        const r = batch[i];
        if (r.settled) continue;
        if (this.holding) {
          this.held.push(r); // held again meanwhile: the rest keep their order
          continue;
        }
        this.letGo(r);
        this.owner.release(r);
      }
    }
  }

  /** Takes every request still held (closing a paused drive fails them); their abort listeners are removed. */
  takeAll(): DriveRequest[] {
    const held = this.held.filter((r) => !r.settled);
    this.held = [];
    for (const r of held) this.letGo(r);
    return held;
  }

  private letGo(r: DriveRequest): void {
    r.settled = true;
    if (r.onAbort) r.signal!.removeEventListener('abort', r.onAbort);
    r.onAbort = undefined;
  }
}
