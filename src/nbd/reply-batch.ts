import type { Socket } from 'node:net';

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

/** Reply batch objects kept for reuse per connection. */
const SPARE_BATCHES = 8;
/** The error a batch is given back with when its last frame could not be written. */
const NOT_WRITTEN = new Error('reply not written: the socket has closed');

/** What the replies of a connection give back once written: pooled frames, and budget bytes. */
export interface ReplyOwner {
  give(pooled: Buffer): void;
  giveBack(bytes: number): void;
}

/**
 * A connection's transmission replies on their way to the socket. A reply that nothing could
 * join leaves at once; otherwise the replies of one event-loop turn are corked into one write,
 * with one write callback for all (see {@link ReplyBatch}).
 */
export class ReplyWriter {
  /** Replies are being gathered for one write at the end of this event-loop turn. */
  private corked = false;
  /** Replies gathered in this turn (written when the socket is uncorked), or null. */
  private batch: ReplyBatch | null = null;
  private readonly spare: ReplyBatch[] = [];
  private readonly uncork = () => {
    this.corked = false;
    this.flush();
    this.socket.uncork();
  };
  /** A batch has been handed to the OS (or never will be: `err`): its frames and budget bytes come back. */
  private readonly written = (b: ReplyBatch, err: Error | null | undefined): void => {
    this.owner.giveBack(b.bytes);
    // Written out: nothing references the frames any more (after an error the socket may still).
    if (!err) for (let i = 0; i < b.pooled.length; i++) this.owner.give(b.pooled[i] as Buffer);
    b.reset();
    if (this.spare.length < SPARE_BATCHES) this.spare.push(b);
  };

  constructor(
    private readonly socket: Socket,
    private readonly owner: ReplyOwner,
  ) {}

  /**
   * Queues one reply, a frame that is one buffer. `pooled`: the buffer the frame lies in goes back
   * to the pool once written; `bytes`: budget bytes its request holds until then. `alone`: no other
   * reply can join it this turn (the only request in flight, none received behind it).
   */
  reply(frame: Uint8Array, pooled: Buffer | null, bytes: number, alone: boolean): void {
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) {
      // Never handed to the socket: nothing references the frame.
      if (pooled !== null) this.owner.give(pooled);
      this.owner.giveBack(bytes);
      return;
    }
    let b = this.batch;
    if (b === null) {
      b = this.spare.pop() ?? new ReplyBatch(this.written);
      b.last = frame;
      if (pooled !== null) b.pooled.push(pooled);
      b.bytes = bytes;
      // A client that waits for each reply (as nbdinfo --map does): the reply leaves at once.
      if (!this.corked && alone) {
        socket.write(frame, b.written);
        return;
      }
      this.batch = b;
      if (!this.corked) {
        this.corked = true;
        socket.cork();
        setImmediate(this.uncork);
      }
      return;
    }
    // The frame held back so far goes now; the new one waits to carry the batch's callback.
    if (b.last !== null) socket.write(b.last);
    b.last = frame;
    if (pooled !== null) b.pooled.push(pooled);
    b.bytes += bytes;
  }

  /** Writes the batch of this turn now (its last frame with the batch's callback), or gives its bytes back if the socket cannot write. */
  flush(): void {
    const b = this.batch;
    if (b === null) return;
    this.batch = null;
    const last = b.last;
    if (last !== null && !this.socket.destroyed && this.socket.writable) {
      this.socket.write(last, b.written);
      return;
    }
    // Frames already given to a socket that has gone may still be referenced: they are not pooled.
    this.written(b, last === null ? null : NOT_WRITTEN);
  }
}
