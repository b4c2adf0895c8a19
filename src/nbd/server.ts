import net from 'node:net';
import tls from 'node:tls';
import { EventEmitter } from 'eventemitter3';
import { type Clock, type ClockTimer, RealClock } from '../clock.js';
import type { Drive } from '../drive.js';
import { BlockError, isBlockError } from '../errors.js';
import { nbdErrorFor } from '../drivers/nbd/errors.js';
import * as P from '../drivers/nbd/protocol.js';
import { MemoryBudget } from './memory-budget.js';
import { BufferPool } from './buffer-pool.js';
import { ReaderClosed, SocketReader } from '../drivers/nbd/reader.js';
import { decodeServerRequest, offsetText, readReplyHeaderSize, type ServerRequest, writeReadReplyHeader, writeSimpleReply } from './request.js';
import { isTlsError, type NbdTlsOptions, type NbdTlsSetup, peerVerifyError, prepareTls, tlsErrorText } from '../drivers/nbd/tls.js';
import { unixListenCause } from '../unix-listen.js';

/** One export: a name clients ask for and the drive that serves it. */
export interface NbdExport {
  /** Name clients select (NBD_OPT_GO / EXPORT_NAME); the empty string is the default export. */
  name: string;
  /** The drive served; its limits and throttling apply to every client. The server never closes it. */
  drive: Drive;
  /** Refuse writes with EPERM and advertise READ_ONLY (always true for a read-only drive). */
  readOnly?: boolean;
  /** Text shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION. */
  description?: string;
}

/** Options of {@link NbdServer}. */
export interface NbdServerOptions {
  /** Exports served from the start (more with {@link NbdServer.addExport}). */
  exports?: readonly NbdExport[];
  /**
   * Connections served at once (default 16). One more waits, not greeted, until a client leaves
   * (as qemu-nbd, which stops accepting); at most as many wait, and beyond that a connection is
   * closed on arrival. Both are reported by the 'full' event. CAN_MULTI_CONN is advertised only
   * when more than one connection is allowed.
   */
  maxConnections?: number;
  /** A client that has not finished the handshake after this long is disconnected (default 10000 ms). */
  handshakeTimeoutMs?: number;
  /** Largest READ / WRITE length in bytes (default 32 MiB, QEMU's NBD_MAX_BUFFER_SIZE). */
  maxRequest?: number;
  /**
   * Bytes that all connections together may hold for requests (WRITE payloads being received or
   * processed, READ data until its reply is written out); past it the server stops reading requests
   * until replies drain, and no request is failed for it (default 256 MiB, at least maxRequest).
   * Buffers of finished requests are kept for reuse, at most a quarter of it (and 32 MiB) idle.
   */
  memoryBudget?: number;
  /** Clock for the handshake timeout (default: the real clock). */
  clock?: Clock;
  /** TLS credentials: clients upgrade with NBD_OPT_STARTTLS (without them STARTTLS is refused with ERR_POLICY). */
  tls?: NbdTlsOptions;
  /**
   * With `tls`: refuse every option but STARTTLS and ABORT with NBD_REP_ERR_TLS_REQD until TLS is
   * up, and drop a client that sends NBD_OPT_EXPORT_NAME first (default true, like QEMU's tls-creds).
   * False lets clients choose plain text or TLS.
   */
  tlsRequired?: boolean;
}

/** Where to listen: a TCP host and port (0: any free port), or a Unix socket path. */
export type NbdListenOptions = { host?: string; port?: number } | { path: string };

/** The address the server is bound to. */
export type NbdAddress = { host: string; port: number } | { path: string };

/** A client, in events. */
export interface NbdClientInfo {
  /** Peer address (`unix` for a Unix socket). */
  address: string;
  /** Peer port (TCP only). */
  port?: number;
  /** The export the client selected (null while it has none). */
  export: string | null;
}

/** Typed events of an {@link NbdServer}. */
export interface NbdServerEvents {
  /** A client finished the handshake and selected an export. */
  connect: (client: NbdClientInfo) => void;
  /** A client's connection ended (`reason`: why, when the server ended it for a fault). */
  disconnect: (client: NbdClientInfo & { reason?: string }) => void;
  /** A client broke the protocol or its socket failed, or the listening socket failed. */
  error: (event: { error: Error; client?: NbdClientInfo }) => void;
  /**
   * A connection came while maxConnections clients were connected: it waits for one to leave
   * (`waiting` true), or, with maxConnections already waiting, it was closed (`waiting` false).
   */
  full: (event: { address: string; port?: number; waiting: boolean; maxConnections: number }) => void;
}

const DEFAULT_MAX_CONNECTIONS = 16;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** QEMU's NBD_MAX_BUFFER_SIZE. */
const DEFAULT_MAX_REQUEST = 32 * 1024 * 1024;
const DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024;
/** Largest option data accepted during the handshake (names are at most 4 KiB; meta context queries a few). */
const MAX_OPTION_LENGTH = 64 * 1024;
/** Unsent option replies past which the server stops reading options until the client takes them. */
const HANDSHAKE_BACKLOG = 256 * 1024;
/** Bytes the reader may hold beyond what the parser asked for. */
const READER_SLACK = 256 * 1024;
/** Idle bytes kept for reuse by the buffer pool, at most (and at most a quarter of the memory budget). */
const POOL_LIMIT = 32 * 1024 * 1024;
/** Requests in flight per connection before the server stops reading new ones. */
const MAX_IN_FLIGHT = 64;
/** Block status extents in one reply (QEMU sends at most ~128 Ki; each is 8 bytes on the wire). */
const MAX_EXTENTS = 128 * 1024;
/** The only metadata context id: base:allocation. */
const ALLOCATION_CONTEXT_ID = 1;
/** Preferred block size advertised in NBD_INFO_BLOCK_SIZE. */
const PREFERRED_BLOCK_SIZE = 4096;
const MAX_U32 = 0xffffffff;

/** Valid command flags by command (QEMU: FUA on any command; the others on one each). */
const VALID_FLAGS: Readonly<Record<number, number>> = {
  [P.NBD_CMD_READ]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_WRITE]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_FLUSH]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_TRIM]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_CACHE]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_WRITE_ZEROES]: P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FAST_ZERO,
  [P.NBD_CMD_BLOCK_STATUS]: P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_REQ_ONE,
};

/** Commands served (DISC ends the connection before serve()); any other type is answered EINVAL without a payload. */
const KNOWN_COMMANDS: ReadonlySet<number> = new Set([P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_FLUSH, P.NBD_CMD_TRIM, P.NBD_CMD_CACHE, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_BLOCK_STATUS]);

/** A request refused before it reached the drive: the NBD error and why. */
class RequestError extends Error {
  constructor(
    readonly nbdError: number,
    message: string,
  ) {
    super(message);
  }
}

/** The client broke the protocol: it is disconnected. */
class ProtocolViolation extends Error {
  override readonly name = 'NbdProtocolError';
}

/**
 * An NBD server (fixed newstyle, structured replies, base:allocation) serving Drives.
 * All connections to an export share its Drive, so limits and throttling apply to their sum,
 * and a flush on any connection flushes the drive (hence CAN_MULTI_CONN).
 */
export class NbdServer extends EventEmitter<NbdServerEvents> {
  private readonly exports = new Map<string, NbdExport>();
  private readonly connections = new Set<Connection>();
  /** Accepted while every slot was taken, not greeted yet, in arrival order; each with its listeners while it waits. */
  private readonly waiting: { socket: net.Socket; gone: () => void }[] = [];
  private readonly server: net.Server;
  private state: 'new' | 'listening' | 'closing' | 'closed' = 'new';
  private closing: Promise<void> | null = null;
  /** @internal */ readonly maxConnections: number;
  /** @internal */ readonly handshakeTimeoutMs: number;
  /** @internal */ readonly maxRequest: number;
  /** @internal */ readonly clock: Clock;
  /** @internal */ readonly budget: MemoryBudget;
  /** @internal WRITE payload and READ reply buffers for reuse. */ readonly pool: BufferPool;
  /** @internal */ readonly tls: NbdTlsSetup | null;
  /** @internal */ readonly tlsRequired: boolean;

  constructor(options: NbdServerOptions = {}) {
    super();
    this.maxConnections = positiveInt(options.maxConnections, DEFAULT_MAX_CONNECTIONS, 'maxConnections');
    this.handshakeTimeoutMs = positiveInt(options.handshakeTimeoutMs, DEFAULT_HANDSHAKE_TIMEOUT_MS, 'handshakeTimeoutMs');
    this.maxRequest = positiveInt(options.maxRequest, DEFAULT_MAX_REQUEST, 'maxRequest');
    if (this.maxRequest > MAX_U32) throw new BlockError('EINVAL', `maxRequest: ${this.maxRequest} exceeds ${MAX_U32}`, { field: 'maxRequest' });
    const memoryBudget = positiveInt(options.memoryBudget, Math.max(DEFAULT_MEMORY_BUDGET, this.maxRequest), 'memoryBudget');
    if (memoryBudget < this.maxRequest) {
      throw new BlockError('EINVAL', `memoryBudget: ${memoryBudget} is below maxRequest ${this.maxRequest} (one request must fit)`, { field: 'memoryBudget' });
    }
    this.budget = new MemoryBudget(memoryBudget);
    this.pool = new BufferPool(Math.min(POOL_LIMIT, memoryBudget >> 2));
    this.clock = options.clock ?? new RealClock();
    this.tls = options.tls === undefined ? null : prepareTls(options.tls);
    if (options.tlsRequired === true && this.tls === null) throw new BlockError('EINVAL', 'tlsRequired: needs tls credentials', { field: 'tlsRequired' });
    this.tlsRequired = this.tls !== null && options.tlsRequired !== false;
    for (const e of options.exports ?? []) this.putExport(e);
    this.server = net.createServer({ pauseOnConnect: false, noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', (error) => this.emit('error', { error }));
  }

  /** Starts listening; resolves with the bound address (the real port when `port` was 0). */
  listen(options: NbdListenOptions = {}): Promise<NbdAddress> {
    if (this.state !== 'new') return Promise.reject(new BlockError('EINVAL', `listen: the server is ${this.state}`));
    this.state = 'listening';
    return new Promise<NbdAddress>((resolve, reject) => {
      const onError = (error: Error) => {
        this.state = 'new';
        // A Unix socket in a missing directory fails as EACCES: the real cause is looked up.
        void ('path' in options ? unixListenCause(error, options.path) : Promise.resolve(error)).then((cause) => {
          const e = cause as Error;
          reject(new BlockError(codeOf(e), `listen: ${e.message}`, { cause: e, ...('path' in options ? { path: options.path } : {}) }));
        });
      };
      this.server.once('error', onError);
      const done = () => {
        this.server.off('error', onError);
        const a = this.server.address();
        if (typeof a === 'string') resolve({ path: a });
        else if (a) resolve({ host: a.address, port: a.port });
        else reject(new BlockError('EIO', 'listen: no address'));
      };
      try {
        if ('path' in options) this.server.listen(options.path, done);
        else this.server.listen(options.port ?? 10809, options.host ?? '127.0.0.1', done);
      } catch (e) {
        // Node refuses a bad port or path synchronously.
        this.server.off('error', onError);
        this.state = 'new';
        reject(new BlockError('EINVAL', `listen: ${(e as Error).message}`, { cause: e, field: 'path' in options ? 'path' : 'port' }));
      }
    });
  }

  /** Adds an export (EEXIST if the name is taken). New clients can select it at once. */
  addExport(e: NbdExport): void {
    this.putExport(e);
  }

  /**
   * Removes an export: new clients can no longer select it; its clients finish in-flight requests
   * and are disconnected. Meanwhile the drive's throttling is lifted, so requests queued by its
   * limits go now instead of holding the removal (as QEMU drains an export's node).
   */
  async removeExport(name: string): Promise<void> {
    const exp = this.exports.get(name);
    if (exp === undefined) throw new BlockError('ENOENT', `removeExport: no export named '${name}'`, { field: 'name' });
    this.exports.delete(name);
    const users = [...this.connections].filter((c) => c.exportName === name);
    const unlift = exp.drive.liftThrottling();
    await Promise.all(users.map((c) => c.quiesce())).finally(unlift);
    for (const c of users) c.end();
    await Promise.all(users.map((c) => c.closed));
  }

  /** Names of the exports served. */
  get exportNames(): string[] {
    return [...this.exports.keys()];
  }

  /** Bytes of the memory budget held now by requests and unwritten replies (all connections). */
  get memoryInUse(): number {
    return this.budget.used;
  }

  /** The most bytes of the memory budget ever held at once. */
  get memoryPeak(): number {
    return this.budget.peak;
  }

  /** Number of open client connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Stops accepting, lets in-flight requests finish, flushes each export's drive and ends the
   * connections; resolves once every connection has closed ('disconnect' emitted). Meanwhile the
   * drives' throttling is lifted: requests queued by limits go now (QEMU drains the exports'
   * nodes). A client that does not take its last replies is cut off after handshakeTimeoutMs.
   * The drives stay open (their owner closes them).
   */
  close(): Promise<void> {
    this.closing ??= this.closeNow();
    return this.closing;
  }

  private async closeNow(): Promise<void> {
    const wasListening = this.state === 'listening';
    this.state = 'closing';
    for (const w of this.waiting.splice(0)) w.socket.destroy();
    const stopped = wasListening ? new Promise<void>((resolve) => this.server.close(() => resolve())) : Promise.resolve();
    const conns = [...this.connections];
    const unlifts = [...new Set([...this.exports.values()].map((e) => e.drive))].map((d) => d.liftThrottling());
    await Promise.all(conns.map((c) => c.quiesce())).finally(() => {
      for (const unlift of unlifts) unlift();
    });
    for (const e of this.exports.values()) {
      if (e.drive.closed || e.readOnly || e.drive.readOnly) continue;
      try {
        await e.drive.flush();
      } catch (error) {
        this.emit('error', { error: error as Error });
      }
    }
    for (const c of conns) c.end();
    await Promise.all(conns.map((c) => c.closed));
    await stopped;
    this.state = 'closed';
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal */
  findExport(name: string): NbdExport | undefined {
    return this.exports.get(name);
  }

  /** @internal */
  allExports(): NbdExport[] {
    return [...this.exports.values()];
  }

  /** @internal */
  forget(c: Connection, reason: string | undefined): void {
    if (!this.connections.delete(c)) return;
    this.emit('disconnect', reason === undefined ? c.info() : { ...c.info(), reason });
    this.admitWaiting();
  }

  private putExport(e: NbdExport): void {
    if (typeof e !== 'object' || e === null || typeof e.name !== 'string') throw new BlockError('EINVAL', 'export: needs a string name', { field: 'name' });
    if (Buffer.byteLength(e.name) > P.NBD_MAX_STRING_SIZE) throw new BlockError('EINVAL', `export '${e.name.slice(0, 40)}…': name longer than ${P.NBD_MAX_STRING_SIZE} bytes`, { field: 'name' });
    // A lone surrogate would go out as U+FFFD: the name would not be the one clients can send.
    if (!P.isWellFormedUtf16(e.name)) throw new BlockError('EINVAL', `export name ${JSON.stringify(e.name)}: not valid UTF-8 (a lone surrogate)`, { field: 'name' });
    if (e.description !== undefined && (typeof e.description !== 'string' || !P.isWellFormedUtf16(e.description))) {
      throw new BlockError('EINVAL', `export '${e.name}': description is not valid UTF-8 (a lone surrogate)`, { field: 'description' });
    }
    if (e.description !== undefined && Buffer.byteLength(e.description) > P.NBD_MAX_STRING_SIZE) throw new BlockError('EINVAL', `export '${e.name}': description longer than ${P.NBD_MAX_STRING_SIZE} bytes`, { field: 'description' });
    if (this.exports.has(e.name)) throw new BlockError('EEXIST', `export '${e.name}' already exists`, { field: 'name' });
    if (typeof e.drive?.read !== 'function') throw new BlockError('EINVAL', `export '${e.name}': drive must be a Drive`, { field: 'drive' });
    this.exports.set(e.name, { ...e });
  }

  private accept(socket: net.Socket): void {
    socket.on('error', ignore);
    if (this.state !== 'listening') {
      socket.destroy();
      return;
    }
    if (this.connections.size < this.maxConnections) {
      this.start(socket);
      return;
    }
    // Every slot taken: like qemu-nbd, which stops accepting until a client leaves (its clients
    // wait in the listen backlog), the connection waits without a greeting; a bounded number do.
    const peer = { address: socket.remoteAddress ?? 'unix', ...(socket.remotePort === undefined ? {} : { port: socket.remotePort }) };
    if (this.waiting.length >= this.maxConnections) {
      socket.destroy();
      this.emit('full', { ...peer, waiting: false, maxConnections: this.maxConnections });
      return;
    }
    const entry = {
      socket,
      gone: () => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) this.waiting.splice(i, 1);
      },
    };
    socket.once('close', entry.gone);
    this.waiting.push(entry);
    this.emit('full', { ...peer, waiting: true, maxConnections: this.maxConnections });
  }

  /** Greets waiting connections while slots are free. */
  private admitWaiting(): void {
    while (this.state === 'listening' && this.connections.size < this.maxConnections) {
      const w = this.waiting.shift();
      if (w === undefined) return;
      w.socket.off('close', w.gone);
      if (!w.socket.destroyed) this.start(w.socket);
    }
  }

  private start(socket: net.Socket): void {
    socket.off('error', ignore);
    const c = new Connection(this, socket);
    this.connections.add(c);
    void c.run();
  }
}

/** Per-connection state: handshake, then requests in flight and replies as they complete. */
class Connection {
  private reader: SocketReader;
  /** The plain socket, then the TLS socket over it once NBD_OPT_STARTTLS succeeded. */
  private socket: net.Socket;
  private tlsActive = false;
  private closeSeen = false;
  private resolveClosed: () => void = () => {};
  private readonly address: string;
  private readonly port: number | undefined;
  private exp: NbdExport | null = null;
  private structured = false;
  private noZeroes = false;
  /** Export name the meta contexts were set for, and whether base:allocation was selected. */
  private meta: { exportName: string; allocation: boolean } | null = null;
  private handshakeTimer: ClockTimer | null = null;
  private endTimer: ClockTimer | null = null;
  /** Replies are being gathered for one write at the end of this event-loop turn. */
  private corked = false;
  private readonly uncork = () => {
    this.corked = false;
    this.socket.uncork();
  };
  /** Resolves once the socket has closed and 'disconnect' was emitted. */
  readonly closed: Promise<void>;
  private inFlight = 0;
  /** Bytes held for requests in flight: WRITE payloads and READ buffers. */
  private inFlightBytes = 0;
  private idleWaiters: (() => void)[] = [];
  private slotWaiter: (() => void) | null = null;
  private stopping = false;
  private quiesced: Promise<void> | null = null;
  private loopDone: Promise<void> = Promise.resolve();
  private faultReason: string | undefined;
  /** Budget bytes held by this connection's requests, by request (given back at the latest when the socket closes). */
  private readonly held = new Set<{ n: number }>();
  /** Ends a wait for budget when the connection stops. */
  private budgetAbort: (() => void) | null = null;

  constructor(
    private readonly server: NbdServer,
    socket: net.Socket,
  ) {
    this.socket = socket;
    this.address = socket.remoteAddress ?? 'unix';
    this.port = socket.remotePort;
    this.reader = new SocketReader(socket, READER_SLACK);
    socket.setNoDelay(true);
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    this.watch(socket);
  }

  /** Socket events that end the connection or let it write again (on the plain socket, and on the TLS one). */
  private watch(socket: net.Socket): void {
    socket.on('error', (raw: NodeJS.ErrnoException) => {
      // OpenSSL's text spans lines and starts with its internals: one line, the reason first.
      const tlsFailed = socket instanceof tls.TLSSocket && isTlsError(raw);
      const error: NodeJS.ErrnoException = tlsFailed ? this.tlsFailure(raw) : raw;
      // A peer that resets or leaves mid-reply is a disconnect (with its reason), not a server error.
      this.faultReason ??= tlsFailed ? error.message : (error.code ?? error.message);
      if (!this.stopping && error.code !== 'ECONNRESET' && error.code !== 'EPIPE') this.server.emit('error', { error, client: this.info() });
    });
    socket.on('close', () => {
      if (this.closeSeen) return;
      this.closeSeen = true;
      this.handshakeTimer?.cancel();
      this.endTimer?.cancel();
      // Replies that will never be written give their bytes back; a pending wait leaves the queue.
      for (const h of this.held) this.server.budget.release(h.n);
      this.held.clear();
      this.cancelBudgetWait();
      this.wakeSlot();
      this.server.forget(this, this.faultReason);
      this.resolveClosed();
    });
    socket.on('drain', () => this.wakeSlot());
  }

  get exportName(): string | null {
    return this.exp?.name ?? null;
  }

  /** A TLS error as one line: "TLS handshake failed: <reason> (<code>)" (or "TLS error: …" once TLS is up). */
  private tlsFailure(e: NodeJS.ErrnoException): NodeJS.ErrnoException {
    const error: NodeJS.ErrnoException = new Error(`${this.tlsActive ? 'TLS error' : 'TLS handshake failed'}: ${tlsErrorText(e)}`, { cause: e });
    if (e.code !== undefined) error.code = e.code;
    return error;
  }

  info(): NbdClientInfo {
    return { address: this.address, ...(this.port === undefined ? {} : { port: this.port }), export: this.exportName };
  }

  async run(): Promise<void> {
    const ms = this.server.handshakeTimeoutMs;
    this.handshakeTimer = this.server.clock.setTimer(this.server.clock.now() + ms * 1e6, () => {
      this.fault(`handshake not finished within ${ms} ms`);
    });
    let loop: () => void = () => {};
    this.loopDone = new Promise<void>((resolve) => {
      loop = resolve;
    });
    try {
      this.send(P.encodeServerGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES));
      const selected = await this.handshake();
      this.handshakeTimer.cancel();
      this.handshakeTimer = null;
      if (!selected) {
        this.end();
        return;
      }
      this.server.emit('connect', this.info());
      await this.transmission();
      await this.idle();
      if (!this.stopping) this.end();
    } catch (e) {
      if (e instanceof ReaderClosed) {
        // The peer went away or the server stopped reading: in-flight replies still go out if they can.
        await this.idle();
        if (!this.stopping) this.end();
      } else {
        this.fault(e instanceof Error ? e.message : String(e), e);
      }
    } finally {
      loop();
    }
  }

  /** Stops reading requests and resolves once every request in flight has replied. */
  quiesce(): Promise<void> {
    this.quiesced ??= (async () => {
      this.stopping = true;
      if (this.exp === null) {
        // Still negotiating: nothing in flight to wait for.
        this.socket.destroy();
        return;
      }
      this.reader.stop(new ReaderClosed('server stopping'));
      this.wakeSlot();
      await this.loopDone;
      await this.idle();
    })();
    return this.quiesced;
  }

  /**
   * Ends the connection after the replies already queued. A peer that does not take them gets
   * as long as it had for its handshake (handshakeTimeoutMs), then the socket is destroyed.
   */
  end(): void {
    this.reader.stop(new ReaderClosed('connection ending'));
    if (this.socket.destroyed || this.endTimer) return;
    const ms = this.server.handshakeTimeoutMs;
    this.endTimer = this.server.clock.setTimer(this.server.clock.now() + ms * 1e6, () => {
      this.faultReason ??= `replies not taken within ${ms} ms of the end`;
      this.socket.destroy();
    });
    // Once the queued replies are flushed the socket is released even if the peer keeps its side open.
    this.socket.end(() => this.socket.destroy());
  }

  /** Drops the connection for a protocol violation or a timeout. */
  private fault(reason: string, error?: unknown): void {
    if (this.socket.destroyed) return;
    this.faultReason = reason;
    this.stopping = true;
    this.reader.stop(new ReaderClosed(reason));
    this.wakeSlot();
    const err = error instanceof Error ? error : new ProtocolViolation(reason);
    this.server.emit('error', { error: err, client: this.info() });
    this.socket.destroy();
  }

  /**
   * Writes one whole frame. Its parts are written synchronously, so no other reply can come between
   * them (the socket needs no other lock). Frames sent in the same turn of the event loop are
   * corked together and leave in one system call.
   */
  private send(...parts: Uint8Array[]): void {
    this.sendFrame(parts);
  }

  /** {@link send} with a callback once the frame has been handed to the OS (or will never be). */
  private sendFrame(parts: Uint8Array[], done?: () => void): void {
    if (!this.writableCorked()) {
      done?.();
      return;
    }
    const last = parts.length - 1;
    for (let i = 0; i < last; i++) this.socket.write(parts[i] as Uint8Array);
    if (last >= 0) this.socket.write(parts[last] as Uint8Array, done);
    else done?.();
  }

  /**
   * A frame that is one buffer (the hot path: no parts array). `done(err)` runs once the frame has
   * been handed to the OS, or with an error when it never will be; without an error the buffer is
   * no longer referenced by the socket.
   */
  private sendOne(frame: Uint8Array, done?: (err?: Error | null) => void): void {
    if (!this.writableCorked()) {
      done?.();
      return;
    }
    this.socket.write(frame, done);
  }

  /**
   * False when the socket can no longer write. Otherwise corks it for this turn: frames sent in the
   * same turn leave together. setImmediate runs after the poll phase has delivered every completion
   * ready in this turn (drive reads finishing together), so their replies leave in one writev.
   */
  private writableCorked(): boolean {
    if (this.socket.destroyed || !this.socket.writable) return false;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    return true;
  }

  // ---- handshake ------------------------------------------------------------------------

  /** Option haggling; true once an export is selected, false when the client aborted. */
  private async handshake(): Promise<boolean> {
    const clientFlags = P.decodeClientFlags(await this.reader.read(P.CLIENT_FLAGS_SIZE));
    if (!(clientFlags & P.NBD_FLAG_C_FIXED_NEWSTYLE)) throw new ProtocolViolation('client does not speak fixed newstyle (oldstyle and plain newstyle are refused)');
    if (clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) throw new ProtocolViolation(`unknown client flags 0x${clientFlags.toString(16)}`);
    this.noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
    for (;;) {
      // A client that sends options without reading the replies must not make them pile up here.
      while (!this.stopping && !this.socket.destroyed && this.socket.writableLength > HANDSHAKE_BACKLOG) {
        await new Promise<void>((resolve) => {
          this.slotWaiter = resolve;
        });
      }
      let header: P.OptionHeader;
      try {
        header = P.decodeOptionHeader(await this.reader.read(P.OPTION_HEADER_SIZE));
      } catch (e) {
        if (e instanceof P.NbdProtocolError) throw new ProtocolViolation(e.message);
        throw e;
      }
      const { option, length } = header;
      if (length > MAX_OPTION_LENGTH) throw new ProtocolViolation(`option ${option}: ${length} bytes of data exceed ${MAX_OPTION_LENGTH}`);
      const data = await this.reader.read(length);
      if (this.server.tlsRequired && !this.tlsActive && option !== P.NBD_OPT_STARTTLS && option !== P.NBD_OPT_ABORT) {
        // EXPORT_NAME has no error reply: the only refusal is to hang up.
        if (option === P.NBD_OPT_EXPORT_NAME) throw new ProtocolViolation('NBD_OPT_EXPORT_NAME before TLS, which this server requires');
        this.replyError(option, P.NBD_REP_ERR_TLS_REQD, `option ${option} needs TLS: send NBD_OPT_STARTTLS first`);
        continue;
      }
      const result = await this.option(option, data);
      if (result !== 'continue') return result === 'selected';
    }
  }

  /**
   * Acknowledges NBD_OPT_STARTTLS, runs the TLS handshake on the same socket, and moves the reader
   * and every later reply to the TLS socket. A failed handshake ends the connection (no way back).
   */
  private async startTls(setup: NbdTlsSetup): Promise<void> {
    const plain = this.socket;
    await new Promise<void>((resolve, reject) => {
      plain.write(P.encodeOptionReply(P.NBD_OPT_STARTTLS, P.NBD_REP_ACK), (e) => (e ? reject(new ReaderClosed(`STARTTLS reply: ${e.message}`)) : resolve()));
    });
    const early = this.reader.detach();
    // The client must wait for the ACK before its ClientHello: bytes already here are not TLS.
    if (early.byteLength !== 0) throw new ProtocolViolation('data sent after NBD_OPT_STARTTLS before its reply');
    const secure = new tls.TLSSocket(plain, setup.options);
    this.socket = secure;
    this.reader = new SocketReader(secure, READER_SLACK);
    this.watch(secure);
    await new Promise<void>((resolve, reject) => {
      const done = (e?: Error) => {
        secure.off('secure', onSecure);
        secure.off('error', onError);
        secure.off('close', onClose);
        if (e) reject(e);
        else resolve();
      };
      const onSecure = () => done();
      const onError = (e: Error) => done(new ProtocolViolation(`TLS handshake failed: ${tlsErrorText(e)}`));
      const onClose = () => done(new ReaderClosed('connection closed during the TLS handshake'));
      secure.on('secure', onSecure);
      secure.on('error', onError);
      secure.on('close', onClose);
    });
    const refused = setup.verifyPeer ? peerVerifyError(secure) : null;
    if (refused !== null) throw new ProtocolViolation(`TLS handshake failed: client certificate refused: ${refused}`);
    this.tlsActive = true;
    // Nothing agreed in plain text carries over into the TLS session.
    this.structured = false;
    this.meta = null;
  }

  private reply(option: number, type: number, data?: Uint8Array): void {
    this.send(P.encodeOptionReply(option, type, data));
  }

  private replyError(option: number, type: number, message: string): void {
    this.reply(option, type, Buffer.from(message, 'utf8'));
  }

  private async option(option: number, data: Buffer): Promise<'continue' | 'selected' | 'abort'> {
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME: {
        let name: string;
        try {
          name = P.decodeUtf8(data, 'NBD_OPT_EXPORT_NAME: the name');
        } catch (e) {
          // No error reply exists for this option: the refusal is to hang up.
          throw new ProtocolViolation((e as Error).message);
        }
        const e = this.server.findExport(name);
        // No error reply exists for this option: an unknown name ends the connection.
        if (!e) throw new ProtocolViolation(`NBD_OPT_EXPORT_NAME: no export named '${name.slice(0, 64)}'`);
        this.select(e);
        this.send(P.encodeExportNameReply(e.drive.length, this.transmissionFlags(e), this.noZeroes));
        return 'selected';
      }
      case P.NBD_OPT_ABORT:
        this.reply(option, P.NBD_REP_ACK);
        return 'abort';
      case P.NBD_OPT_LIST:
        if (data.byteLength !== 0) {
          this.replyError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
          return 'continue';
        }
        for (const e of this.server.allExports()) this.reply(option, P.NBD_REP_SERVER, P.encodeServerEntry(e.name, e.description ?? ''));
        this.reply(option, P.NBD_REP_ACK);
        return 'continue';
      case P.NBD_OPT_STARTTLS:
        if (this.server.tls === null) {
          this.replyError(option, P.NBD_REP_ERR_POLICY, 'TLS is not available on this server');
        } else if (this.tlsActive) {
          this.replyError(option, P.NBD_REP_ERR_INVALID, 'TLS is already negotiated');
        } else if (data.byteLength !== 0) {
          this.replyError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
        } else {
          await this.startTls(this.server.tls);
        }
        return 'continue';
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO:
        return this.infoOrGo(option, data);
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (data.byteLength !== 0) {
          this.replyError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          return 'continue';
        }
        this.structured = true;
        this.reply(option, P.NBD_REP_ACK);
        return 'continue';
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT:
        this.metaContext(option, data);
        return 'continue';
      default:
        this.replyError(option, P.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
        return 'continue';
    }
  }

  private infoOrGo(option: number, data: Buffer): 'continue' | 'selected' {
    let req: P.InfoRequest;
    try {
      req = P.decodeInfoRequest(data);
    } catch (e) {
      this.replyError(option, P.NBD_REP_ERR_INVALID, (e as Error).message);
      return 'continue';
    }
    const e = this.server.findExport(req.name);
    if (!e) {
      this.replyError(option, P.NBD_REP_ERR_UNKNOWN, `no export named '${req.name.slice(0, 64)}'`);
      return 'continue';
    }
    this.reply(option, P.NBD_REP_INFO, P.encodeInfoExport(e.drive.length, this.transmissionFlags(e)));
    if (req.requests.includes(P.NBD_INFO_NAME)) this.reply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_NAME, e.name));
    if (req.requests.includes(P.NBD_INFO_DESCRIPTION) && e.description) {
      this.reply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_DESCRIPTION, e.description));
    }
    // Sent whether asked or not: any alignment works (minimum 1), and the client learns the largest request.
    this.reply(option, P.NBD_REP_INFO, P.encodeInfoBlockSize(1, PREFERRED_BLOCK_SIZE, this.server.maxRequest));
    this.reply(option, P.NBD_REP_ACK);
    if (option === P.NBD_OPT_INFO) return 'continue';
    this.select(e);
    return 'selected';
  }

  private metaContext(option: number, data: Buffer): void {
    if (!this.structured) {
      this.replyError(option, P.NBD_REP_ERR_INVALID, 'metadata contexts need NBD_OPT_STRUCTURED_REPLY first');
      return;
    }
    let req: P.MetaContextRequest;
    try {
      req = P.decodeMetaContextRequest(data);
    } catch (e) {
      this.replyError(option, P.NBD_REP_ERR_INVALID, (e as Error).message);
      return;
    }
    if (!this.server.findExport(req.exportName)) {
      this.replyError(option, P.NBD_REP_ERR_UNKNOWN, `no export named '${req.exportName.slice(0, 64)}'`);
      return;
    }
    const set = option === P.NBD_OPT_SET_META_CONTEXT;
    // LIST with no query lists everything; LIST may also ask for a whole namespace ("base:").
    const matches = set
      ? req.queries.some((q) => q === P.NBD_META_BASE_ALLOCATION)
      : req.queries.length === 0 || req.queries.some((q) => q === P.NBD_META_BASE_ALLOCATION || q === 'base:');
    if (set) this.meta = { exportName: req.exportName, allocation: matches };
    if (matches) this.reply(option, P.NBD_REP_META_CONTEXT, P.encodeMetaContext(ALLOCATION_CONTEXT_ID, P.NBD_META_BASE_ALLOCATION));
    this.reply(option, P.NBD_REP_ACK);
  }

  private select(e: NbdExport): void {
    this.exp = e;
    // Contexts chosen for another export do not carry over.
    if (this.meta && this.meta.exportName !== e.name) this.meta = null;
  }

  private readOnly(e: NbdExport): boolean {
    return e.readOnly === true || e.drive.readOnly;
  }

  private transmissionFlags(e: NbdExport): number {
    let f = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_CACHE;
    // With one connection allowed, a second one would wait (as qemu-nbd -e 1, which does not advertise it either).
    if (this.server.maxConnections > 1) f |= P.NBD_FLAG_CAN_MULTI_CONN;
    if (this.readOnly(e)) f |= P.NBD_FLAG_READ_ONLY;
    else f |= P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES | P.NBD_FLAG_SEND_FAST_ZERO;
    return f;
  }

  // ---- transmission ---------------------------------------------------------------------

  private async transmission(): Promise<void> {
    const maxRequest = this.server.maxRequest;
    for (;;) {
      // The awaits are skipped when nothing needs waiting for: requests already received are parsed in one go.
      if (this.mustWait()) await this.slot();
      if (this.stopping) return;
      let req: ServerRequest;
      try {
        // Decoded where it lies in the received chunk when it is all here (the usual case at depth).
        req = this.reader.decodeNow(P.REQUEST_SIZE, decodeServerRequest) ?? decodeServerRequest(await this.reader.read(P.REQUEST_SIZE), 0);
      } catch (e) {
        if (e instanceof P.NbdProtocolError) throw new ProtocolViolation(e.message);
        throw e;
      }
      // READ data and WRITE payloads count against the server-wide budget until their reply is written.
      const bytes = (req.type === P.NBD_CMD_WRITE && req.length <= maxRequest) || (req.type === P.NBD_CMD_READ && req.length <= maxRequest) ? req.length : 0;
      let hold: { n: number } | null = null;
      if (bytes > 0) {
        hold = this.server.budget.tryTake(bytes) ? this.keep(bytes) : await this.reserve(bytes);
        if (hold === null) return;
      }
      let payload: Buffer | null = null;
      switch (req.type) {
        case P.NBD_CMD_DISC:
          // No reply: in-flight requests finish, then the connection ends.
          return;
        case P.NBD_CMD_WRITE:
          // The payload cannot be skipped safely when it is larger than we accept: drop the client.
          if (req.length > maxRequest) throw new ProtocolViolation(`NBD_CMD_WRITE of ${req.length} bytes exceeds the maximum ${maxRequest}`);
          // Copied out of the received chunks into a reused buffer (the copy a fresh buffer needed too).
          payload = this.server.pool.take(req.length);
          if (!this.reader.fillNow(payload)) await this.reader.fill(payload);
          break;
        default:
          // No payload, as QEMU reads it: only WRITE carries one of the commands we offer (an
          // unknown command is answered EINVAL by serve(); its length says nothing about a payload).
          break;
      }
      this.inFlight++;
      this.inFlightBytes += bytes;
      void this.serve(req, payload, hold, bytes);
    }
  }

  /**
   * Waits until another request may be read: few enough requests and bytes in flight, and the
   * socket not backed up by a client that does not read its replies. What a connection holds stays
   * bounded by about 2 × maxRequest of requests plus maxRequest of unsent replies.
   */
  private async slot(): Promise<void> {
    while (this.mustWait()) {
      await new Promise<void>((resolve) => {
        this.slotWaiter = resolve;
      });
    }
  }

  private mustWait(): boolean {
    const max = this.server.maxRequest;
    return !this.stopping && (this.inFlight >= MAX_IN_FLIGHT || (this.inFlight > 0 && this.inFlightBytes >= 2 * max) || this.socket.writableLength > max);
  }

  private wakeSlot(): void {
    const w = this.slotWaiter;
    this.slotWaiter = null;
    w?.();
    if (this.stopping || this.closeSeen) this.cancelBudgetWait();
  }

  /**
   * Takes `n` bytes of the server's budget for one request; while the budget is spent the
   * connection reads nothing more (its socket pauses). Null when the connection stops meanwhile.
   */
  private async reserve(n: number): Promise<{ n: number } | null> {
    const budget = this.server.budget;
    if (!budget.tryTake(n)) {
      const w = budget.wait(n);
      let stopped = false;
      await Promise.race([
        w.taken,
        new Promise<void>((resolve) => {
          this.budgetAbort = () => {
            stopped = true;
            resolve();
          };
        }),
      ]);
      this.budgetAbort = null;
      if (stopped && w.cancel()) return null;
      // Taken (perhaps just as the wait was cut short): the bytes are ours to hold or give back.
    }
    const hold = this.keep(n);
    if (this.stopping || this.closeSeen) {
      this.giveBack(hold);
      return null;
    }
    return hold;
  }

  /** Records `n` bytes just taken from the budget as this connection's. */
  private keep(n: number): { n: number } {
    const hold = { n };
    this.held.add(hold);
    return hold;
  }

  private giveBack(hold: { n: number }): void {
    if (this.held.delete(hold)) this.server.budget.release(hold.n);
  }

  private cancelBudgetWait(): void {
    const abort = this.budgetAbort;
    this.budgetAbort = null;
    abort?.();
  }

  private idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Runs one request on the drive and sends its reply; the request's budget bytes (`hold`) go
   * back once the reply has been written. Then it leaves the in-flight count. Never rejects.
   */
  private async serve(req: ServerRequest, payload: Buffer | null, hold: { n: number } | null, bytes: number): Promise<void> {
    try {
      this.check(req);
      switch (req.type) {
        case P.NBD_CMD_READ:
          await this.read(req, hold);
          return;
        case P.NBD_CMD_BLOCK_STATUS:
          await this.blockStatus(req);
          return;
        case P.NBD_CMD_WRITE:
          await this.drive.write(req.offset, payload as Buffer);
          // The drive is done with the payload once the write succeeded (a failed one may leave pieces running).
          this.server.pool.give(payload as Buffer);
          if (req.flags & P.NBD_CMD_FLAG_FUA) await this.drive.flush();
          break;
        case P.NBD_CMD_FLUSH:
          await this.drive.flush();
          break;
        case P.NBD_CMD_TRIM:
          await this.trim(req);
          break;
        case P.NBD_CMD_WRITE_ZEROES:
          await this.writeZeroes(req);
          break;
        case P.NBD_CMD_CACHE:
          // Advisory: nothing to prefetch into (the drive has its own caches, if any).
          break;
      }
      const reply = Buffer.allocUnsafe(P.SIMPLE_REPLY_SIZE);
      writeSimpleReply(reply, req, P.NBD_SUCCESS);
      this.sendOne(reply, hold === null ? undefined : () => this.giveBack(hold));
    } catch (e) {
      this.sendError(req, e, hold === null ? undefined : () => this.giveBack(hold));
    } finally {
      this.inFlight--;
      this.inFlightBytes -= bytes;
      this.wakeSlot();
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private get drive(): Drive {
    return (this.exp as NbdExport).drive;
  }

  /** Refusals that do not need the drive: flags, read-only, bounds, lengths, negotiated contexts. */
  private check(req: P.NbdRequest): void {
    // An unknown command: EINVAL, and the connection goes on (as qemu-nbd).
    if (!KNOWN_COMMANDS.has(req.type)) throw new RequestError(P.NBD_EINVAL, `unknown command ${req.type}`);
    // QEMU's order: read-only, then bounds, then flags.
    const e = this.exp as NbdExport;
    const writes = req.type === P.NBD_CMD_WRITE || req.type === P.NBD_CMD_TRIM || req.type === P.NBD_CMD_WRITE_ZEROES;
    if (writes && this.readOnly(e)) throw new RequestError(P.NBD_EPERM, `export '${e.name}' is read-only`);
    const size = e.drive.length;
    if (req.type !== P.NBD_CMD_FLUSH && (req.offset > size || req.length > size - req.offset)) {
      // QEMU: writing past the end is "no space", any other access past it is invalid.
      const err = req.type === P.NBD_CMD_WRITE || req.type === P.NBD_CMD_WRITE_ZEROES ? P.NBD_ENOSPC : P.NBD_EINVAL;
      throw new RequestError(err, `offset ${offsetText(req)} + length ${req.length} beyond the export size ${size}`);
    }
    const valid = VALID_FLAGS[req.type] ?? 0;
    if (req.flags & ~valid) throw new RequestError(P.NBD_EINVAL, `flags 0x${req.flags.toString(16)} not valid for command ${req.type}`);
    if (req.type === P.NBD_CMD_READ && req.length > this.server.maxRequest) {
      throw new RequestError(P.NBD_EINVAL, `read of ${req.length} bytes exceeds the maximum ${this.server.maxRequest}`);
    }
    if (req.type === P.NBD_CMD_BLOCK_STATUS) {
      if (!this.meta?.allocation) throw new RequestError(P.NBD_EINVAL, 'NBD_CMD_BLOCK_STATUS without a negotiated metadata context');
      if (req.length === 0) throw new RequestError(P.NBD_EINVAL, 'NBD_CMD_BLOCK_STATUS of length 0');
    }
  }

  /**
   * Reads straight into the reply: one buffer holds the reply header and, behind it, the data the
   * drive fills, so the reply leaves in one socket write. The buffer is reused once written out.
   */
  private async read(req: ServerRequest, hold: { n: number } | null): Promise<void> {
    if (req.length === 0) {
      const done = hold === null ? undefined : () => this.giveBack(hold);
      if (this.structured) this.sendOne(P.encodeStructuredReplyHeader(req.cookie, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, 0), done);
      else this.sendOne(P.encodeSimpleReply(req.cookie, P.NBD_SUCCESS), done);
      return;
    }
    const structured = this.structured;
    const header = readReplyHeaderSize(structured);
    const pool = this.server.pool;
    const frame = pool.take(header + req.length);
    await this.drive.read(req.offset, frame.subarray(header));
    writeReadReplyHeader(frame, req, structured);
    this.sendOne(frame, (err?: Error | null) => {
      if (hold !== null) this.giveBack(hold);
      // Written out (or never handed to the socket): nothing references the frame any more.
      if (!err) pool.give(frame);
    });
  }

  private async trim(req: P.NbdRequest): Promise<void> {
    try {
      await this.drive.discard(req.offset, req.length);
    } catch (e) {
      // A discard is a hint: a drive that cannot discard has done nothing wrong.
      if (!isBlockError(e, 'ENOTSUP')) throw e;
    }
    if (req.flags & P.NBD_CMD_FLAG_FUA) await this.drive.flush();
  }

  private async writeZeroes(req: P.NbdRequest): Promise<void> {
    if (req.flags & P.NBD_CMD_FLAG_FAST_ZERO) {
      // The drive cannot promise a fast zeroing, except where the range already reads as zeros.
      if (!(await this.allZero(req.offset, req.length))) {
        throw new RequestError(P.NBD_ENOTSUP, 'fast zeroing is not available for this range');
      }
      return;
    }
    if (req.length > 0) await this.drive.writeZeroes(req.offset, req.length);
    if (req.flags & P.NBD_CMD_FLAG_FUA) await this.drive.flush();
  }

  private async allZero(offset: number, length: number): Promise<boolean> {
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const s = await this.drive.blockStatus(pos, end - pos);
      if (!s.zero || !(s.length > 0)) return false;
      pos += s.length;
    }
    return true;
  }

  private async blockStatus(req: P.NbdRequest): Promise<void> {
    const end = req.offset + req.length;
    const one = (req.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0;
    const extents: P.Extent[] = [];
    for (let pos = req.offset; pos < end; ) {
      const s = await this.drive.blockStatus(pos, end - pos);
      if (!(s.length > 0)) throw new BlockError('EIO', `block status at ${pos}: empty extent`, { offset: pos });
      const length = Math.min(s.length, end - pos);
      const flags = P.allocationFlags(s);
      const last = extents[extents.length - 1];
      // Extents with the same flags merge (the request length is 32-bit, so the sum stays 32-bit).
      if (last && last.flags === flags) last.length += length;
      else if (extents.length >= MAX_EXTENTS) break;
      else extents.push({ length, flags });
      pos += length;
      if (one) break;
    }
    this.send(P.encodeBlockStatusChunk(req.cookie, P.NBD_REPLY_FLAG_DONE, ALLOCATION_CONTEXT_ID, extents));
  }

  private sendError(req: P.NbdRequest, e: unknown, done?: () => void): void {
    const error = e instanceof RequestError ? e.nbdError : nbdErrorFor(e);
    if (this.structured) {
      const message = e instanceof Error ? e.message : String(e);
      this.sendOne(P.encodeErrorChunk(req.cookie, P.NBD_REPLY_FLAG_DONE, error, message), done);
    } else {
      this.sendOne(P.encodeSimpleReply(req.cookie, error), done);
    }
  }
}

function ignore(): void {}

function positiveInt(value: number | undefined, fallback: number, field: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) throw new BlockError('EINVAL', `${field}: must be a positive integer, got ${value}`, { field });
  return value;
}

function codeOf(e: Error): 'EACCES' | 'EEXIST' | 'EINVAL' | 'EIO' | 'ENOENT' | 'ENOTDIR' {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return code;
  if (code === 'EACCES' || code === 'EPERM') return 'EACCES';
  if (code === 'EADDRINUSE') return 'EEXIST';
  if (code === 'EADDRNOTAVAIL' || code === 'EINVAL') return 'EINVAL';
  return 'EIO';
}
