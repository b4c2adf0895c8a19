import net from 'node:net';
import { BlockError, type BlockErrorCode, fromErrno } from '../errors.js';
import { blockCodeForNbdError } from './errors.js';
import * as P from './protocol.js';
import { ReaderClosed, SocketReader } from './reader.js';

/** Where the server listens (QEMU's SocketAddress spelling). */
export type NbdClientAddress = { type: 'inet'; host: string; port: number } | { type: 'unix'; path: string };

/** What the client needs to connect to one export. */
export interface NbdClientOptions {
  readonly server: NbdClientAddress;
  /** Export name ('' is the server's default export). */
  readonly exportName: string;
  /** Node name for error context. */
  readonly node?: string;
}

/** What the handshake agreed on for the export. */
export interface NbdExportInfo {
  /** Export size in bytes. */
  readonly size: number;
  /** Transmission flags (NBD_FLAG_*). */
  readonly flags: number;
  /** Minimum block size (1 when the server gave none). */
  readonly minimum: number;
  /** Preferred block size (4096 when the server gave none). */
  readonly preferred: number;
  /** Maximum block size (32 MiB when the server gave none). */
  readonly maximum: number;
  /** Structured replies were agreed. */
  readonly structured: boolean;
  /** The id of the base:allocation context, when the server offers it. */
  readonly allocationContext?: number;
}

/** The spec's default payload limit when a server advertises no maximum (QEMU's NBD_MAX_BUFFER_SIZE too). */
export const NBD_DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
const READER_SLACK = 1024 * 1024;
const MAX_OPTION_REPLY = 64 * 1024;
/** A server that has not finished the handshake in this time is given up on. */
const HANDSHAKE_TIMEOUT_MS = 30_000;
/** How long close() waits for the server to hang up after NBD_CMD_DISC. */
const DISC_GRACE_MS = 1000;

/** One request in flight: what it is, where read data goes, how to settle it. */
interface Pending {
  readonly type: number;
  readonly offset: number;
  readonly length: number;
  readonly buffer?: Uint8Array;
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
 * An NBD client over one connection (fixed newstyle, structured replies, base:allocation):
 * many requests in flight, replies matched by cookie. A lost connection rejects every request
 * in flight with EIO, and every later request at once.
 */
export class NbdClient {
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private dead: BlockError | null = null;
  private closing = false;

  private constructor(
    private readonly socket: net.Socket,
    private readonly reader: SocketReader,
    readonly info: NbdExportInfo,
    private readonly where: string,
    private readonly node: string | undefined,
  ) {
    socket.on('close', () => this.lose(this.closing ? 'the connection was closed' : `connection to ${where} lost`));
    socket.on('error', () => {
      // 'close' follows and fails what is in flight.
    });
    void this.receive();
  }

  /** Connects, negotiates and selects the export. */
  static async connect(options: NbdClientOptions): Promise<NbdClient> {
    const where = describe(options.server);
    const ctx = { node: options.node, field: 'server' };
    const socket = await open(options.server, where, ctx);
    const reader = new SocketReader(socket, READER_SLACK);
    let timedOut = false;
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => {
      timedOut = true;
      socket.destroy();
    });
    try {
      const info = await handshake(socket, reader, options.exportName, where, options.node);
      socket.setTimeout(0);
      return new NbdClient(socket, reader, info, where, options.node);
    } catch (e) {
      if (e instanceof BlockError) {
        // A clean refusal (unknown export, policy): say goodbye as the protocol asks, then hang up.
        socket.end(P.encodeOption(P.NBD_OPT_ABORT));
        socket.destroySoon();
        throw e;
      }
      socket.destroy();
      if (timedOut) throw new BlockError('EIO', `NBD handshake with ${where}: no answer within ${HANDSHAKE_TIMEOUT_MS / 1000} s`, ctx);
      if (e instanceof ReaderClosed) throw new BlockError('EIO', `NBD handshake with ${where}: ${e.message}`, { ...ctx, cause: e });
      if (e instanceof P.NbdProtocolError) throw new BlockError('EIO', `NBD handshake with ${where}: ${e.message}`, { ...ctx, cause: e });
      throw fromErrno(e, `NBD handshake with ${where}`, ctx);
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

  /** Sends NBD_CMD_DISC and closes the connection (requests still in flight fail with EIO). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (!this.dead) {
      this.socket.write(P.encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, cookie: 0n, offset: 0, length: 0 }));
      await new Promise<void>((resolve) => {
        this.socket.once('close', () => resolve());
        // A server that does not close its side within a second of DISC is cut off.
        this.socket.setTimeout(DISC_GRACE_MS, () => this.socket.destroy());
        this.socket.end();
      });
    }
    this.lose('the connection was closed');
  }

  private request(
    type: number,
    flags: number,
    offset: number,
    length: number,
    extra: { buffer?: Uint8Array; payload?: Uint8Array; out?: { extent?: P.Extent } },
  ): Promise<void> {
    if (this.dead) return Promise.reject(this.error('EIO', this.dead.message, offset, length));
    const cookie = this.nextCookie++;
    return new Promise<void>((resolve, reject) => {
      const p: Pending = {
        type,
        offset,
        length,
        covered: 0,
        ...(extra.buffer ? { buffer: extra.buffer } : {}),
        resolve: () => {
          if (extra.out && p.extent) extra.out.extent = p.extent;
          resolve();
        },
        reject,
      };
      this.pending.set(cookie, p);
      const header = P.encodeRequest({ flags, type, cookie, offset, length });
      if (extra.payload) {
        this.socket.cork();
        this.socket.write(header);
        this.socket.write(extra.payload);
        this.socket.uncork();
      } else this.socket.write(header);
    });
  }

  /** The reply loop: reads replies until the connection ends, settling requests by cookie. */
  private async receive(): Promise<void> {
    try {
      for (;;) {
        const magic = await this.reader.read(4);
        if (P.replyKind(magic) === 'simple') await this.simpleReply(Buffer.concat([magic, await this.reader.read(12)]));
        else await this.structuredChunk(Buffer.concat([magic, await this.reader.read(16)]));
      }
    } catch (e) {
      if (e instanceof ReaderClosed) this.lose(this.closing ? 'the connection was closed' : `connection to ${this.where} lost`);
      else {
        this.lose(`NBD protocol error from ${this.where}: ${(e as Error).message}`);
        this.socket.destroy();
      }
    }
  }

  private take(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (!p) throw new P.NbdProtocolError(`reply for unknown cookie ${cookie}`);
    return p;
  }

  private async simpleReply(header: Buffer): Promise<void> {
    const { error, cookie } = P.decodeSimpleReply(header);
    const p = this.take(cookie);
    this.pending.delete(cookie);
    if (error !== 0) return p.reject(this.nbdError(p, error, ''));
    if (p.type === P.NBD_CMD_READ && p.buffer) p.buffer.set(await this.reader.read(p.length));
    p.resolve();
  }

  private async structuredChunk(header: Buffer): Promise<void> {
    const h = P.decodeStructuredReplyHeader(header);
    const p = this.take(h.cookie);
    const payload = h.length > 0 ? await this.reader.read(h.length) : Buffer.alloc(0);
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
        if (bs.contextId === this.info.allocationContext && !p.extent) p.extent = bs.extents[0];
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
      this.pending.delete(h.cookie);
      if (!p.error && p.type === P.NBD_CMD_READ && p.covered !== p.length) {
        p.error = this.error('EIO', `NBD READ at ${p.offset} (+${p.length}) on ${this.where}: the server's reply covered ${p.covered} bytes`, p.offset, p.length);
      }
      if (p.error) p.reject(p.error);
      else p.resolve();
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

  /** The connection is gone: every request in flight fails with EIO, and every later one at once. */
  private lose(reason: string): void {
    if (!this.dead) this.dead = this.error('EIO', reason);
    this.reader.stop(new ReaderClosed(reason));
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(this.error('EIO', `${reason} with the request in flight`, p.offset, p.length));
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

function describe(a: NbdClientAddress): string {
  return a.type === 'inet' ? `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}` : `unix:${a.path}`;
}

function open(a: NbdClientAddress, where: string, ctx: { node?: string | undefined; field: string }): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = a.type === 'inet' ? net.connect({ host: a.host, port: a.port, noDelay: true }) : net.connect({ path: a.path });
    const onError = (e: Error) => {
      socket.destroy();
      reject(fromErrno(e, `could not connect to NBD server ${where}`, { ...ctx, ...(a.type === 'unix' ? { path: a.path } : {}) }));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

/** Fixed newstyle negotiation up to NBD_OPT_GO. */
async function handshake(socket: net.Socket, reader: SocketReader, exportName: string, where: string, node: string | undefined): Promise<NbdExportInfo> {
  const handshakeFlags = P.decodeServerGreeting(await reader.read(P.SERVER_GREETING_SIZE));
  const noZeroes = (handshakeFlags & P.NBD_FLAG_NO_ZEROES) !== 0;
  socket.write(P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? P.NBD_FLAG_C_NO_ZEROES : 0)));

  /** Sends an option and collects its replies up to the final ACK or error. */
  const haggle = async (option: number, data?: Uint8Array) => {
    socket.write(P.encodeOption(option, data));
    const replies: { type: number; data: Buffer }[] = [];
    for (;;) {
      const h = P.decodeOptionReplyHeader(await reader.read(P.OPTION_REPLY_HEADER_SIZE));
      if (h.option !== option) throw new P.NbdProtocolError(`reply to option ${h.option} while waiting for option ${option}`);
      if (h.length > MAX_OPTION_REPLY) throw new P.NbdProtocolError(`option reply of ${h.length} bytes`);
      const d = h.length > 0 ? await reader.read(h.length) : Buffer.alloc(0);
      if (h.type === P.NBD_REP_ACK || P.isOptionReplyError(h.type)) return { final: h.type, message: d.toString('utf8'), replies };
      replies.push({ type: h.type, data: d });
    }
  };

  const sr = await haggle(P.NBD_OPT_STRUCTURED_REPLY);
  const structured = sr.final === P.NBD_REP_ACK;

  let allocationContext: number | undefined;
  if (structured) {
    const mc = await haggle(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest(exportName, [P.NBD_META_BASE_ALLOCATION]));
    if (mc.final === P.NBD_REP_ACK) {
      for (const r of mc.replies) {
        if (r.type !== P.NBD_REP_META_CONTEXT) continue;
        const c = P.decodeMetaContext(r.data);
        if (c.name === P.NBD_META_BASE_ALLOCATION) allocationContext = c.id;
      }
    }
  }

  const go = await haggle(P.NBD_OPT_GO, P.encodeInfoRequest(exportName, [P.NBD_INFO_BLOCK_SIZE]));
  const ctx = { ...(node !== undefined ? { node } : {}), field: 'export' };
  if (go.final !== P.NBD_REP_ACK) {
    const detail = go.message ? `: ${go.message}` : '';
    if (go.final === P.NBD_REP_ERR_UNKNOWN) throw new BlockError('ENOENT', `NBD server ${where} has no export '${exportName}'${detail}`, ctx);
    if (go.final === P.NBD_REP_ERR_TLS_REQD) throw new BlockError('ENOTSUP', `NBD server ${where} requires TLS for export '${exportName}'${detail}`, ctx);
    if (go.final === P.NBD_REP_ERR_POLICY) throw new BlockError('EACCES', `NBD server ${where} refused export '${exportName}'${detail}`, ctx);
    if (go.final === P.NBD_REP_ERR_UNSUP) throw new BlockError('ENOTSUP', `NBD server ${where} does not support NBD_OPT_GO${detail}`, ctx);
    throw new BlockError('EIO', `NBD server ${where} refused export '${exportName}' (error 0x${go.final.toString(16)})${detail}`, ctx);
  }
  let size: number | undefined;
  let flags = 0;
  let minimum = 1;
  let preferred = 4096;
  let maximum = NBD_DEFAULT_MAX_PAYLOAD;
  for (const r of go.replies) {
    if (r.type !== P.NBD_REP_INFO) continue;
    const i = P.decodeInfoReply(r.data);
    if (i.type === 'export') {
      size = i.size;
      flags = i.transmissionFlags;
    } else if (i.type === 'block-size') {
      minimum = i.minimum;
      preferred = i.preferred;
      maximum = i.maximum;
    }
  }
  if (size === undefined) throw new P.NbdProtocolError('NBD_OPT_GO succeeded without NBD_INFO_EXPORT');
  return { size, flags, minimum, preferred, maximum, structured, ...(allocationContext !== undefined ? { allocationContext } : {}) };
}
