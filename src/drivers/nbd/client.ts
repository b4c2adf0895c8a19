import type net from 'node:net';
import { BlockError, type BlockErrorCode } from '../../errors.js';
import { describe, establish, type Link, type NbdClientOptions, type NbdExportInfo } from './client-handshake.js';
import { blockCodeForNbdError } from './errors.js';
import * as P from './protocol.js';
import { ReaderClosed } from './reader.js';

export { NBD_DEFAULT_MAX_PAYLOAD, type NbdClientAddress, type NbdClientOptions, type NbdExportInfo } from './client-handshake.js';

/** How long close() waits for the server to hang up after NBD_CMD_DISC. */
const DISC_GRACE_MS = 1000;
/** Reconnection attempts start this far apart and double up to the maximum. */
const RECONNECT_FIRST_MS = 50;
const RECONNECT_MAX_MS = 2000;

/** One request until it settles: what to send (again, after a reconnect), where read data goes. */
interface Pending {
  readonly type: number;
  readonly flags: number;
  readonly offset: number;
  readonly length: number;
  readonly buffer?: Uint8Array;
  readonly payload?: Uint8Array;
  error?: BlockError;
  extent?: P.Extent;
  /** Bytes of a READ that data and hole chunks have covered (chunks never overlap). */
  covered: number;
  resolve(): void;
  reject(e: BlockError): void;
}

/** A block status extent as the server reported it (flags of base:allocation). */
export interface NbdExtent {
  readonly length: number;
  readonly flags: number;
}

/**
 * - connected: requests go out at once;
 * - waiting: the connection was lost and is being re-established; requests wait (reconnect-delay);
 * - failing: the delay ran out; requests fail at once while reconnection goes on in the background;
 * - dead: closed, a protocol error, or a loss with no reconnect-delay; requests fail at once for good.
 */
type State = 'connected' | 'waiting' | 'failing' | 'dead';

/**
 * An NBD client (fixed newstyle, structured replies, base:allocation): many requests in flight
 * over one connection, replies matched by cookie. A lost connection either fails every request
 * (reconnect-delay 0) or is re-established in the background while requests wait for it.
 */
export class NbdClient {
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private state: State = 'connected';
  /** Why requests fail (states failing and dead). */
  private failure: BlockError | null = null;
  private closing = false;
  private link: Link | null;
  private delayTimer: ReturnType<typeof setTimeout> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private retryMs = RECONNECT_FIRST_MS;
  /** The last reconnection failure, for the EIO message when the delay runs out. */
  private lastAttemptError = '';
  private readonly where: string;
  private readonly node: string | undefined;
  /** Times the connection was re-established (for tests and info). */
  reconnects = 0;

  /** What the first handshake agreed on (a reconnection must keep the size, and writability when needed). */
  readonly info: NbdExportInfo;

  private constructor(
    link: Link,
    private readonly options: NbdClientOptions,
  ) {
    this.where = describe(options.server);
    this.node = options.node;
    this.info = link.info;
    this.link = link;
    this.attach(link);
  }

  /** Connects, negotiates and selects the export (retrying for `openTimeout` seconds if asked). */
  static async connect(options: NbdClientOptions): Promise<NbdClient> {
    checkSeconds(options.reconnectDelay, 'reconnect-delay', options.node);
    checkSeconds(options.openTimeout, 'open-timeout', options.node);
    const deadline = Date.now() + (options.openTimeout ?? 0) * 1000;
    let wait = RECONNECT_FIRST_MS;
    for (;;) {
      try {
        return new NbdClient(await establish(options), options);
      } catch (e) {
        // A clean refusal (no such export, TLS policy) will not change by retrying; a server not up yet may.
        const retriable = e instanceof BlockError && (e.code === 'EIO' || e.code === 'ENXIO' || (e.code === 'ENOENT' && e.field === 'server'));
        if (!retriable || Date.now() + wait > deadline) throw e;
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, RECONNECT_MAX_MS);
      }
    }
  }

  /** Reads `buffer.length` bytes at `offset`. */
  read(offset: number, buffer: Uint8Array): Promise<void> {
    return this.request(P.NBD_CMD_READ, 0, offset, buffer.byteLength, { buffer });
  }

  /** Writes `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.request(P.NBD_CMD_WRITE, 0, offset, data.byteLength, { payload: data });
  }

  flush(): Promise<void> {
    return this.request(P.NBD_CMD_FLUSH, 0, 0, 0, {});
  }

  trim(offset: number, length: number): Promise<void> {
    return this.request(P.NBD_CMD_TRIM, 0, offset, length, {});
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.request(P.NBD_CMD_WRITE_ZEROES, 0, offset, length, {});
  }

  /** The first base:allocation extent at `offset` (REQ_ONE); needs the context. */
  async blockStatus(offset: number, length: number): Promise<NbdExtent> {
    const out: { extent?: P.Extent } = {};
    await this.request(P.NBD_CMD_BLOCK_STATUS, P.NBD_CMD_FLAG_REQ_ONE, offset, length, { out });
    if (!out.extent) throw this.error('EIO', `BLOCK_STATUS at ${offset}: the server sent no extent`, offset, length);
    return out.extent;
  }

  /** Sends NBD_CMD_DISC and closes the connection (requests still in flight, or waiting for a reconnect, fail with EIO). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.stopTimers();
    const link = this.link;
    if (link && this.state === 'connected') {
      link.socket.write(P.encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, cookie: 0n, offset: 0, length: 0 }));
      await new Promise<void>((resolve) => {
        link.socket.once('close', () => resolve());
        // A server that does not close its side within a second of DISC is cut off.
        link.socket.setTimeout(DISC_GRACE_MS, () => link.socket.destroy());
        link.socket.end();
      });
    }
    this.die('the connection was closed');
  }

  private request(
    type: number,
    flags: number,
    offset: number,
    length: number,
    extra: { buffer?: Uint8Array; payload?: Uint8Array; out?: { extent?: P.Extent } },
  ): Promise<void> {
    if (this.state === 'dead' || this.state === 'failing') {
      return Promise.reject(this.error('EIO', (this.failure as BlockError).message, offset, length));
    }
    const cookie = this.nextCookie++;
    return new Promise<void>((resolve, reject) => {
      const p: Pending = {
        type,
        flags,
        offset,
        length,
        covered: 0,
        ...(extra.buffer ? { buffer: extra.buffer } : {}),
        ...(extra.payload ? { payload: extra.payload } : {}),
        resolve: () => {
          if (extra.out && p.extent) extra.out.extent = p.extent;
          resolve();
        },
        reject,
      };
      this.pending.set(cookie, p);
      // While waiting for a reconnection the request is sent with the others once the link is back.
      if (this.state === 'connected' && this.link) send(this.link.socket, cookie, p);
    });
  }

  /** Settles a request once: it leaves the table first, so a later reply or loss cannot touch it. */
  private settle(cookie: bigint, p: Pending, error?: BlockError): void {
    if (this.pending.get(cookie) !== p) return;
    this.pending.delete(cookie);
    if (error) p.reject(error);
    else p.resolve();
  }

  private attach(link: Link): void {
    link.socket.on('close', () => this.lost(link, this.closing ? 'the connection was closed' : `connection to ${this.where} lost`));
    link.socket.on('error', () => {
      // 'close' follows and handles what is in flight.
    });
    void this.receive(link);
  }

  /** The reply loop of one link: reads replies until it ends, settling requests by cookie. */
  private async receive(link: Link): Promise<void> {
    try {
      for (;;) {
        const magic = await link.reader.read(4);
        if (P.replyKind(magic) === 'simple') await this.simpleReply(link, Buffer.concat([magic, await link.reader.read(12)]));
        else await this.structuredChunk(link, Buffer.concat([magic, await link.reader.read(16)]));
      }
    } catch (e) {
      if (e instanceof ReaderClosed) this.lost(link, this.closing ? 'the connection was closed' : `connection to ${this.where} lost`);
      else {
        // A server that breaks the protocol is not reconnected to: what it sent cannot be trusted.
        link.socket.destroy();
        if (this.link === link) this.die(`NBD protocol error from ${this.where}: ${(e as Error).message}`);
      }
    }
  }

  private take(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (!p) throw new P.NbdProtocolError(`reply for unknown cookie ${cookie}`);
    return p;
  }

  private async simpleReply(link: Link, header: Buffer): Promise<void> {
    const { error, cookie } = P.decodeSimpleReply(header);
    const p = this.take(cookie);
    if (error !== 0) return this.settle(cookie, p, this.nbdError(p, error, ''));
    if (p.type === P.NBD_CMD_READ && p.buffer) {
      const data = await link.reader.read(p.length);
      if (this.link !== link) return;
      p.buffer.set(data);
    }
    this.settle(cookie, p);
  }

  private async structuredChunk(link: Link, header: Buffer): Promise<void> {
    const h = P.decodeStructuredReplyHeader(header);
    const p = this.take(h.cookie);
    const payload = h.length > 0 ? await link.reader.read(h.length) : Buffer.alloc(0);
    if (this.link !== link) return;
    switch (h.type) {
      case P.NBD_REPLY_TYPE_NONE:
        break;
      case P.NBD_REPLY_TYPE_OFFSET_DATA: {
        const at = P.decodeOffsetDataOffset(payload);
        this.place(p, at, payload.byteLength - 8);
        p.buffer?.set(payload.subarray(8), at - p.offset);
        p.covered += payload.byteLength - 8;
        break;
      }
      case P.NBD_REPLY_TYPE_OFFSET_HOLE: {
        const hole = P.decodeOffsetHole(payload);
        this.place(p, hole.offset, hole.length);
        p.buffer?.fill(0, hole.offset - p.offset, hole.offset - p.offset + hole.length);
        p.covered += hole.length;
        break;
      }
      case P.NBD_REPLY_TYPE_BLOCK_STATUS: {
        if (p.type !== P.NBD_CMD_BLOCK_STATUS) throw new P.NbdProtocolError('BLOCK_STATUS chunk for another command');
        const bs = P.decodeBlockStatusChunk(payload);
        if (bs.contextId === link.info.allocationContext && !p.extent) p.extent = bs.extents[0];
        break;
      }
      default:
        if (h.type === P.NBD_REPLY_TYPE_ERROR || h.type === P.NBD_REPLY_TYPE_ERROR_OFFSET) {
          const err = P.decodeErrorChunk(h.type, payload);
          p.error ??= this.nbdError(p, err.error, err.message);
        } else if (h.type & 0x8000) {
          // An unknown error type still fails the request.
          p.error ??= this.error('EIO', `NBD request failed (reply type ${h.type})`, p.offset, p.length);
        }
      // Unknown non-error chunk types are ignored, as the spec asks.
    }
    if (h.flags & P.NBD_REPLY_FLAG_DONE) {
      if (!p.error && p.type === P.NBD_CMD_READ && p.covered !== p.length) {
        p.error = this.error('EIO', `NBD READ at ${p.offset} (+${p.length}) on ${this.where}: the server's reply covered ${p.covered} bytes`, p.offset, p.length);
      }
      this.settle(h.cookie, p, p.error);
    }
  }

  /** Checks that a data or hole chunk lies inside its READ request. */
  private place(p: Pending, at: number, length: number): void {
    if (p.type !== P.NBD_CMD_READ) throw new P.NbdProtocolError('read data chunk for another command');
    if (at < p.offset || at + length > p.offset + p.length) {
      throw new P.NbdProtocolError(`chunk [${at}, +${length}) outside the request [${p.offset}, +${p.length})`);
    }
  }

  private nbdError(p: Pending, error: number, message: string): BlockError {
    const write = p.type !== P.NBD_CMD_READ && p.type !== P.NBD_CMD_BLOCK_STATUS;
    const code = blockCodeForNbdError(error, write);
    const what = COMMAND_NAMES[p.type] ?? `command ${p.type}`;
    return this.error(code, `NBD ${what} at ${p.offset} (+${p.length}) on ${this.where} failed: error ${error}${message ? `: ${message}` : ''}`, p.offset, p.length);
  }

  private error(code: BlockErrorCode, message: string, offset?: number, length?: number): BlockError {
    return new BlockError(code, message, {
      ...(this.node !== undefined ? { node: this.node } : {}),
      ...(offset !== undefined ? { offset } : {}),
      ...(length !== undefined ? { length } : {}),
    });
  }

  /** A link ended: without reconnect-delay everything fails; with it, requests wait while the client reconnects. */
  private lost(link: Link, reason: string): void {
    if (this.link !== link) return;
    this.link = null;
    link.reader.stop(new ReaderClosed(reason));
    link.socket.destroy();
    const delay = this.options.reconnectDelay ?? 0;
    if (this.closing || delay === 0) {
      this.die(reason);
      return;
    }
    this.state = 'waiting';
    this.lastAttemptError = reason;
    // Chunks of a reply cut short are discarded: the request is sent again whole.
    for (const p of this.pending.values()) {
      p.covered = 0;
      p.error = undefined;
      p.extent = undefined;
    }
    this.delayTimer = setTimeout(() => {
      this.delayTimer = null;
      if (this.state !== 'waiting') return;
      this.state = 'failing';
      this.failure = this.error('EIO', `${reason}; not reconnected within reconnect-delay ${delay} s (${this.lastAttemptError})`);
      this.failAll(this.failure.message);
      // Reconnection goes on in the background, without keeping the process alive on its own.
      this.retryTimer?.unref();
    }, delay * 1000);
    this.retryMs = RECONNECT_FIRST_MS;
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.reconnect();
    }, this.retryMs);
    if (this.state === 'failing') this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, RECONNECT_MAX_MS);
  }

  private async reconnect(): Promise<void> {
    let link: Link;
    try {
      link = await establish(this.options);
    } catch (e) {
      if (this.closing || this.state === 'dead') return;
      this.lastAttemptError = (e as Error).message;
      this.scheduleRetry();
      return;
    }
    if (this.closing || this.state === 'dead') {
      link.socket.destroy();
      return;
    }
    const before = this.info;
    const changed =
      link.info.size !== before.size
        ? `its size changed from ${before.size} to ${link.info.size} bytes`
        : this.options.needWrite && link.info.flags & P.NBD_FLAG_READ_ONLY
          ? 'it is now read-only'
          : null;
    if (changed) {
      link.socket.destroy();
      this.die(`NBD export '${this.options.exportName}' on ${this.where} changed across a reconnection: ${changed}`);
      return;
    }
    if (this.delayTimer) clearTimeout(this.delayTimer);
    this.delayTimer = null;
    this.link = link;
    this.state = 'connected';
    this.failure = null;
    this.reconnects++;
    this.attach(link);
    for (const [cookie, p] of this.pending) send(link.socket, cookie, p);
  }

  private stopTimers(): void {
    if (this.delayTimer) clearTimeout(this.delayTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.delayTimer = null;
    this.retryTimer = null;
  }

  /** For good: every request waiting or in flight fails with EIO, and every later one at once. */
  private die(reason: string): void {
    this.stopTimers();
    if (this.state !== 'dead') {
      this.state = 'dead';
      this.failure = this.error('EIO', reason);
    }
    const link = this.link;
    if (link) {
      link.reader.stop(new ReaderClosed(reason));
      link.socket.destroy();
    }
    this.failAll(reason);
  }

  private failAll(reason: string): void {
    const all = [...this.pending];
    this.pending.clear();
    for (const [, p] of all) p.reject(this.error('EIO', `${reason} with the request in flight`, p.offset, p.length));
  }
}

/** Writes one request (header, and a WRITE's payload in the same segment). */
function send(socket: net.Socket, cookie: bigint, p: Pending): void {
  const header = P.encodeRequest({ flags: p.flags, type: p.type, cookie, offset: p.offset, length: p.length });
  if (p.payload) {
    socket.cork();
    socket.write(header);
    socket.write(p.payload);
    socket.uncork();
  } else socket.write(header);
}

function checkSeconds(v: number | undefined, field: string, node: string | undefined): void {
  if (v === undefined) return;
  if (!Number.isFinite(v) || v < 0 || v > 4294967295) {
    throw new BlockError('EINVAL', `${field}: must be a number of seconds >= 0`, { field, ...(node !== undefined ? { node } : {}) });
  }
}

const COMMAND_NAMES: Readonly<Record<number, string>> = {
  [P.NBD_CMD_READ]: 'READ',
  [P.NBD_CMD_WRITE]: 'WRITE',
  [P.NBD_CMD_FLUSH]: 'FLUSH',
  [P.NBD_CMD_TRIM]: 'TRIM',
  [P.NBD_CMD_WRITE_ZEROES]: 'WRITE_ZEROES',
  [P.NBD_CMD_BLOCK_STATUS]: 'BLOCK_STATUS',
};

