import type net from 'node:net';

/**
 * The handshake's replies not written yet. They are written as one buffer before the handshake
 * waits for the client ({@link flush}), so the replies to options that arrived together leave in
 * one system call, with no cork and no timer, and no other reply can come between a frame's parts.
 */
export class HandshakeReplies {
  private readonly frames: Uint8Array[] = [];
  /** Bytes queued. */
  bytes = 0;

  /** Queues one whole frame. */
  push(frame: Uint8Array): void {
    this.frames.push(frame);
    this.bytes += frame.byteLength;
  }

  /** Writes what is queued to `socket` in one buffer (dropped if the socket can no longer write). */
  flush(socket: net.Socket): void {
    const f = this.frames;
    if (f.length === 0) return;
    const out = f.length === 1 ? (f[0] as Uint8Array) : Buffer.concat(f, this.bytes);
    f.length = 0;
    this.bytes = 0;
    if (!socket.destroyed && socket.writable) socket.write(out);
  }
}
