/**
 * Replies written to the socket in one go (one event-loop turn's, corked into one writev), with
 * one write callback for all of them rather than a callback per reply. The last frame is held
 * back until the batch closes so that it can carry that callback; Node calls write callbacks in
 * order, so when it runs every frame of the batch has been handed to the OS.
 */
export class ReplyBatch {
  /** Pooled frames in the batch: they go back to the pool once written. */
  readonly pooled: Buffer[] = [];
  /** Budget bytes the batch's requests hold until their replies are written. */
  bytes = 0;
  /** The newest frame, not yet given to the socket (it goes last, with {@link written}). */
  last: Uint8Array | null = null;
  /** The write callback of the batch's last frame (made once per batch object). */
  readonly written: (err?: Error | null) => void;

  constructor(onWritten: (batch: ReplyBatch, err: Error | null | undefined) => void) {
    this.written = (err) => onWritten(this, err);
  }

  /** Empties the batch for reuse (its frames have been written or dropped). */
  reset(): void {
    this.pooled.length = 0;
    this.bytes = 0;
    this.last = null;
  }
}
