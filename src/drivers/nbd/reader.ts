import type { Socket } from 'node:net';

/** Raised by {@link SocketReader.read} when the peer closed, or the reader was stopped, before enough bytes came. */
export class ReaderClosed extends Error {
  override readonly name = 'ReaderClosed';
}

/** Who waits for bytes: `resolve` once they are here, `reject` once the reader has ended first. */
export interface ReadWaiter {
  resolve(): void;
  reject(e: Error): void;
}

/**
 * Reads exact byte counts from a socket for a sequential parser. It holds at most what the
 * current read needs plus `slack` bytes: past that the socket is paused (TCP backpressure
 * reaches the peer), so a fast or hostile client cannot make the server buffer without bound.
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  /** Bytes of chunks[0] already read (the chunk is not sliced per read). */
  private head = 0;
  private size = 0;
  private want = 0;
  private waiter: ReadWaiter | null = null;
  private ended: Error | null = null;
  private readonly onData = (chunk: Buffer) => {
    if (this.ended) return;
    this.chunks.push(chunk);
    this.size += chunk.byteLength;
    if (this.size > this.want + this.slack) this.socket.pause();
    if (this.waiter && this.size >= this.want) this.wake();
  };
  // 'end' and 'close' both come at the end of most connections: an Error (its stack) only for the first
  private readonly onEnd = () => this.ended === null && this.stop(new ReaderClosed('peer closed the connection'));
  private readonly onClose = () => this.ended === null && this.stop(new ReaderClosed('connection closed'));

  constructor(
    private readonly socket: Socket,
    private readonly slack: number,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
  }

  /**
   * Lets go of the socket (for a TLS upgrade, where another reader takes over the stream):
   * its listeners are removed and the bytes received but not read are returned. Later reads reject.
   */
  detach(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onClose);
    if (this.head > 0 && this.chunks.length > 0) this.chunks[0] = (this.chunks[0] as Buffer).subarray(this.head);
    this.head = 0;
    const rest = Buffer.concat(this.chunks);
    this.stop(new ReaderClosed('reader detached'));
    return rest;
  }

  /** Bytes received and not yet read. */
  get buffered(): number {
    return this.size;
  }

  /** Resolves with exactly `n` bytes; rejects with ReaderClosed if the stream ends first. */
  async read(n: number): Promise<Buffer> {
    await this.arrival(n);
    const out = this.take(n);
    this.want = 0;
    if (this.socket.isPaused() && this.size <= this.slack && !this.ended) this.socket.resume();
    return out;
  }

  /** Fills `target` with the next `target.byteLength` bytes, waiting for them; rejects with ReaderClosed if the stream ends first. */
  async fill(target: Buffer): Promise<void> {
    await this.arrival(target.byteLength);
    this.copyOut(target);
    this.want = 0;
    if (this.socket.isPaused() && this.size <= this.slack && !this.ended) this.socket.resume();
  }

  /** {@link fill} if the bytes are here already (true), else false and nothing read: no promise when nothing needs waiting for. */
  fillNow(target: Buffer): boolean {
    if (this.ended || this.size < target.byteLength || this.waiter) return false;
    this.copyOut(target);
    if (this.socket.isPaused() && this.size <= this.slack) this.socket.resume();
    return true;
  }

  /**
   * Decodes the next `n` bytes with `decode` if they are here already, else null (nothing read).
   * When they lie in one received chunk (the usual case) they are decoded where they are, without a
   * slice or copy.
   */
  decodeNow<T>(n: number, decode: (b: Buffer, at: number) => T): T | null {
    if (this.ended || this.size < n || this.waiter) return null;
    const first = this.chunks[0] as Buffer;
    let out: T;
    if (first.byteLength - this.head >= n) {
      // Decode before advancing: a decoder that throws leaves the bytes unread (the connection ends anyway).
      out = decode(first, this.head);
      this.advance(first, n);
    } else {
      out = decode(this.take(n), 0);
    }
    if (this.socket.isPaused() && this.size <= this.slack) this.socket.resume();
    return out;
  }

  /**
   * A wait for `n` bytes without a promise: `w.resolve` is called from the socket's 'data' event
   * once they are buffered (then {@link decodeNow}, {@link readNow} and {@link fillNow} find them),
   * `w.reject` once the reader ends first. True, and no call, if they are here already; throws the
   * reason if the reader has ended. One wait at a time, as for {@link read}.
   */
  whenBuffered(n: number, w: ReadWaiter): boolean {
    if (this.ended) throw this.ended;
    if (this.size >= n) return true;
    this.want = n;
    if (this.socket.isPaused() && this.size <= n + this.slack) this.socket.resume();
    this.waiter = w;
    return false;
  }

  /** Waits until `n` bytes are buffered. */
  private async arrival(n: number): Promise<void> {
    if (this.size >= n) return;
    if (this.ended) throw this.ended;
    this.want = n;
    if (this.socket.isPaused() && this.size <= n + this.slack) this.socket.resume();
    await new Promise<void>((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /**
   * Exactly `n` bytes if they are here already, else null (then {@link read} waits for them):
   * a parser loop takes every request of a chunk without a promise per request.
   */
  readNow(n: number): Buffer | null {
    if (this.ended || this.size < n || this.waiter) return null;
    const out = this.take(n);
    if (this.socket.isPaused() && this.size <= this.slack) this.socket.resume();
    return out;
  }

  /** Ends reading: a pending and every later read rejects with `reason`; buffered bytes are dropped. */
  stop(reason: Error): void {
    if (this.ended) return;
    this.ended = reason;
    this.chunks = [];
    this.head = 0;
    this.size = 0;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(reason);
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.resolve();
  }

  /** Marks `n` bytes of the first chunk, `first`, as read. */
  private advance(first: Buffer, n: number): void {
    this.size -= n;
    this.head += n;
    if (this.head === first.byteLength) {
      this.chunks.shift();
      this.head = 0;
    }
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.byteLength - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(first, n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.copyOut(out);
    return out;
  }

  /** Moves the next `target.byteLength` buffered bytes into `target`. */
  private copyOut(target: Buffer): void {
    const n = target.byteLength;
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0] as Buffer;
      const k = Math.min(c.byteLength - this.head, n - filled);
      c.copy(target, filled, this.head, this.head + k);
      filled += k;
      this.advance(c, k);
    }
  }
}
