import type { Socket } from 'node:net';

/** Raised by {@link SocketReader.read} when the peer closed, or the reader was stopped, before enough bytes came. */
export class ReaderClosed extends Error {
  override readonly name = 'ReaderClosed';
}

/**
 * Reads exact byte counts from a socket for a sequential parser. It holds at most what the
 * current read needs plus `slack` bytes: past that the socket is paused (TCP backpressure
 * reaches the peer), so a fast or hostile client cannot make the server buffer without bound.
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private size = 0;
  private want = 0;
  private waiter: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private ended: Error | null = null;
  private readonly onData = (chunk: Buffer) => {
    if (this.ended) return;
    this.chunks.push(chunk);
    this.size += chunk.byteLength;
    if (this.size > this.want + this.slack) this.socket.pause();
    if (this.waiter && this.size >= this.want) this.wake();
  };
  private readonly onEnd = () => this.stop(new ReaderClosed('peer closed the connection'));
  private readonly onClose = () => this.stop(new ReaderClosed('connection closed'));

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
    if (this.size < n) {
      if (this.ended) throw this.ended;
      this.want = n;
      if (this.socket.isPaused() && this.size <= n + this.slack) this.socket.resume();
      await new Promise<void>((resolve, reject) => {
        this.waiter = { resolve, reject };
      });
    }
    const out = this.take(n);
    this.want = 0;
    if (this.socket.isPaused() && this.size <= this.slack && !this.ended) this.socket.resume();
    return out;
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

  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.byteLength >= n) {
      this.size -= n;
      if (first.byteLength === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0] as Buffer;
      const k = Math.min(c.byteLength, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.byteLength) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.size -= n;
    return out;
  }
}
