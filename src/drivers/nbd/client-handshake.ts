/**
 * The client side of the NBD handshake: connecting, STARTTLS, and option haggling up to
 * NBD_OPT_GO. It yields a {@link Link} (socket, reader, what was agreed) that the NbdClient runs
 * its requests over; reconnections go through it again.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import { BlockError, fromErrno } from '../../errors.js';
import * as P from './protocol.js';
import { ReaderClosed, SocketReader } from './reader.js';
import { clientTlsOptions, type NbdClientTls, tlsErrorText } from './tls.js';
import { nodeNet, nodeTls } from './net-modules.js';

/** Where the server listens (QEMU's SocketAddress spelling). */
export type NbdClientAddress = { type: 'inet'; host: string; port: number } | { type: 'unix'; path: string };

/** What the client needs to connect to one export. */
export interface NbdClientOptions {
  readonly server: NbdClientAddress;
  /** Export name ('' is the server's default export). */
  readonly exportName: string;
  /** Node name for error context. */
  readonly node?: string;
  /**
   * Seconds that requests wait for a lost connection to come back (QEMU's reconnect-delay). While
   * the client reconnects in the background, requests in flight and new ones wait; once it is back
   * they are sent again (reads, writes, flushes, trims and zeroes at the same offset are idempotent).
   * After the delay they fail with EIO. 0 (the default): a lost connection fails every request at once, for good.
   */
  readonly reconnectDelay?: number;
  /** Seconds to keep retrying the first connection (QEMU's open-timeout; default 0: one attempt). */
  readonly openTimeout?: number;
  /** TLS credentials: the client sends NBD_OPT_STARTTLS first and never goes on in plain text. */
  readonly tls?: NbdClientTls;
  /** The name the server's x509 certificate must carry (QEMU's tls-hostname; default: the inet host, none for a Unix socket). */
  readonly tlsHostname?: string;
  /** Refuse a reconnection to an export that is now read-only (the driver was opened read-write). */
  readonly needWrite?: boolean;
  /**
   * The metadata context block status reports instead of base:allocation (QEMU's x-dirty-bitmap,
   * e.g. `qemu:dirty-bitmap:NAME`); the server must offer it.
   */
  readonly metaContext?: string;
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
  /** The id of the block status context (base:allocation, or the one asked for), when the server offers it. */
  readonly allocationContext?: number;
}

/** The spec's default payload limit when a server advertises no maximum (QEMU's NBD_MAX_BUFFER_SIZE too). */
export const NBD_DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
const READER_SLACK = 1024 * 1024;
const MAX_OPTION_REPLY = 64 * 1024;
/** A server that has not finished the handshake in this time is given up on. */
const HANDSHAKE_TIMEOUT_MS = 30_000;

/** One negotiated connection. */
export interface Link {
  readonly socket: net.Socket;
  readonly reader: SocketReader;
  readonly info: NbdExportInfo;
}

/** Opens a connection, starts TLS when asked, and negotiates the export (all within the handshake timeout). */
export async function establish(options: NbdClientOptions): Promise<Link> {
  const where = describe(options.server);
  const ctx = { node: options.node, field: 'server' };
  const raw = await open(options.server, where, ctx);
  // Failures surface through the reader and 'close'; a write after a failure must not throw an unhandled 'error'.
  raw.on('error', () => undefined);
  let socket: net.Socket = raw;
  let reader = new SocketReader(raw, READER_SLACK);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    socket.destroy();
    raw.destroy();
  }, HANDSHAKE_TIMEOUT_MS);
  try {
    const handshakeFlags = P.decodeServerGreeting(await reader.read(P.SERVER_GREETING_SIZE));
    const noZeroes = (handshakeFlags & P.NBD_FLAG_NO_ZEROES) !== 0;
    raw.write(P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? P.NBD_FLAG_C_NO_ZEROES : 0)));
    if (options.tls) {
      socket = await startTls(raw, reader, options, where);
      reader = new SocketReader(socket, READER_SLACK);
    }
    const info = await negotiate(socket, reader, options.exportName, where, options.node, options.metaContext);
    return { socket, reader, info };
  } catch (e) {
    if (e instanceof BlockError && !socket.destroyed) {
      // A clean refusal (unknown export, policy): say goodbye as the protocol asks, then hang up.
      socket.end(P.encodeOption(P.NBD_OPT_ABORT));
      socket.destroySoon();
      throw e;
    }
    socket.destroy();
    raw.destroy();
    if (e instanceof BlockError) throw e;
    if (timedOut) throw new BlockError('EIO', `NBD handshake with ${where}: no answer within ${HANDSHAKE_TIMEOUT_MS / 1000} s`, ctx);
    const alert = tlsAlerts.get(socket);
    if (alert !== undefined) throw new BlockError('EACCES', `NBD TLS session with ${where} failed: ${tlsErrorText(alert)}`, { ...ctx, field: 'tls', cause: alert });
    if (e instanceof ReaderClosed) throw new BlockError('EIO', `NBD handshake with ${where}: ${e.message}`, { ...ctx, cause: e });
    if (e instanceof P.NbdProtocolError) throw new BlockError('EIO', `NBD handshake with ${where}: ${e.message}`, { ...ctx, cause: e });
    throw fromErrno(e, `NBD handshake with ${where}`, ctx);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * NBD_OPT_STARTTLS, then the TLS handshake over the same socket. A server that refuses TLS, or
 * whose credentials do not verify, fails the connection: there is no fallback to plain text.
 */
async function startTls(raw: net.Socket, reader: SocketReader, options: NbdClientOptions, where: string): Promise<tls.TLSSocket> {
  const ctx = { ...(options.node !== undefined ? { node: options.node } : {}), field: 'tls' };
  const reply = await haggleOn(raw, reader, P.NBD_OPT_STARTTLS);
  if (reply.final !== P.NBD_REP_ACK) {
    const detail = reply.message ? `: ${reply.message}` : '';
    const code = reply.final === P.NBD_REP_ERR_POLICY ? 'EACCES' : 'ENOTSUP';
    throw new BlockError(code, `NBD server ${where} refused STARTTLS (error 0x${reply.final.toString(16)})${detail}; TLS was asked for, so the client does not go on without it`, ctx);
  }
  // The server says nothing more in plain text: its next bytes are its side of the TLS handshake.
  if (reader.detach().byteLength > 0) throw new P.NbdProtocolError('bytes after the STARTTLS reply, before TLS');
  const hostname = options.tlsHostname ?? (options.server.type === 'inet' ? options.server.host : undefined);
  const secure = nodeTls().connect(clientTlsOptions(options.tls as NbdClientTls, raw, hostname));
  try {
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
      secure.once('close', () => reject(new Error('the server closed the connection')));
    });
  } catch (e) {
    secure.destroy();
    raw.destroy();
    const err = e as NodeJS.ErrnoException;
    // A server that hangs up mid-handshake is, as often as not, refusing our credentials (GnuTLS does so on a wrong PSK).
    throw new BlockError('EACCES', `NBD TLS handshake with ${where} failed: ${tlsErrorText(err)}`, { ...ctx, cause: e });
  }
  // A server that refuses us after its side of the handshake (TLS 1.3: a client certificate it
  // will not take) sends an alert: kept, so the hang-up that follows is reported with its reason.
  secure.on('error', (e) => {
    if (!tlsAlerts.has(secure)) tlsAlerts.set(secure, e);
  });
  return secure;
}

/** The first TLS error of a session after its handshake (an alert from the server), by socket. */
const tlsAlerts = new WeakMap<net.Socket, Error>();

export function describe(a: NbdClientAddress): string {
  return a.type === 'inet' ? `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}` : `unix:${a.path}`;
}

function open(a: NbdClientAddress, where: string, ctx: { node?: string | undefined; field: string }): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = a.type === 'inet' ? nodeNet().connect({ host: a.host, port: a.port, noDelay: true }) : nodeNet().connect({ path: a.path });
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

/** Sends an option and collects its replies up to the final ACK or error. */
async function haggleOn(socket: net.Socket, reader: SocketReader, option: number, data?: Uint8Array) {
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
}

/** Fixed newstyle option haggling, after the greeting (and TLS), up to NBD_OPT_GO. */
async function negotiate(socket: net.Socket, reader: SocketReader, exportName: string, where: string, node: string | undefined, asked: string | undefined): Promise<NbdExportInfo> {
  const context = asked ?? P.NBD_META_BASE_ALLOCATION;
  const haggle = (option: number, data?: Uint8Array) => haggleOn(socket, reader, option, data);
  const sr = await haggle(P.NBD_OPT_STRUCTURED_REPLY);
  const structured = sr.final === P.NBD_REP_ACK;

  let allocationContext: number | undefined;
  if (structured) {
    const mc = await haggle(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest(exportName, [context]));
    if (mc.final === P.NBD_REP_ACK) {
      for (const r of mc.replies) {
        if (r.type !== P.NBD_REP_META_CONTEXT) continue;
        const c = P.decodeMetaContext(r.data);
        if (c.name === context) allocationContext = c.id;
      }
    }
  }

  // Refused before NBD_OPT_GO, while the client may still abort cleanly.
  if (asked !== undefined && allocationContext === undefined) {
    throw new BlockError('EINVAL', `requested x-dirty-bitmap ${asked} not found`, { ...(node !== undefined ? { node } : {}), field: 'xDirtyBitmap' });
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
