import net from 'node:net';
import { EventEmitter } from 'eventemitter3';
import { type Clock, RealClock } from '../clock.js';
import * as P from '../drivers/nbd/protocol.js';
import { type NbdTlsSetup, prepareTls } from '../drivers/nbd/tls.js';
import { BlockError } from '../errors.js';
import { unixListenCause } from '../unix-listen.js';
import { BufferPool } from './buffer-pool.js';
import { Connection } from './connection.js';
import { Deadlines } from './deadlines.js';
import { isReadOnly, type NbdExport } from './export.js';
import { acquireContexts, releaseContexts, resolveContexts, type ServedExport } from './export-contexts.js';
import { MemoryBudget } from './memory-budget.js';
import type { HandedConnection } from './handover.js';
import type { NbdAddress, NbdListenOptions, NbdServerEvents, NbdServerOptions } from './server-options.js';

export type { NbdExport } from './export.js';
export type { NbdAddress, NbdClientInfo, NbdListenOptions, NbdServerEvents, NbdServerOptions } from './server-options.js';

const DEFAULT_MAX_CONNECTIONS = 16;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** QEMU's NBD_MAX_BUFFER_SIZE. */
const DEFAULT_MAX_REQUEST = 32 * 1024 * 1024;
const DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024;
/** Idle bytes kept for reuse by the buffer pool, at most (and at most a quarter of the memory budget). */
const POOL_LIMIT = 32 * 1024 * 1024;
const MAX_U32 = 0xffffffff;

// The server is each Connection's ConnectionHost (checked where it passes itself to one), not
// declared with `implements`: the host's members are internal, stripped from the published types.
/**
 * An NBD server (fixed newstyle, structured replies, base:allocation) serving Drives.
 * All connections to an export share its Drive, so limits and throttling apply to their sum,
 * and a flush on any connection flushes the drive (hence CAN_MULTI_CONN).
 */
export class NbdServer extends EventEmitter<NbdServerEvents> {
  private readonly exports = new Map<string, ServedExport>();
  /** Exports whose bitmaps are held busy (until removed, or the server closed). */
  private readonly holding = new Set<ServedExport>();
  private readonly connections = new Set<Connection>();
  /** Accepted while every slot was taken, not greeted yet, in arrival order; each with its listeners while it waits. */
  private readonly waiting: { socket: net.Socket; gone: () => void }[] = [];
  private readonly server: net.Server;
  private state: 'new' | 'listening' | 'closing' | 'closed' = 'new';
  private closing: Promise<void> | null = null;
  /** @internal */ readonly maxConnections: number;
  /** @internal */ readonly handshakeTimeoutMs: number;
  /** @internal One timer for every handshake in progress (they all have the same timeout). */ readonly handshakeDeadlines: Deadlines;
  /** @internal */ readonly maxRequest: number;
  /** @internal */ readonly clock: Clock;
  /** @internal */ readonly budget: MemoryBudget;
  /** @internal WRITE payload and READ reply buffers for reuse. */ readonly pool: BufferPool;
  /** @internal */ readonly tls: NbdTlsSetup | null;
  /** @internal */ readonly tlsRequired: boolean;

  /** @internal STARTTLS can be offered. */
  get tlsAvailable(): boolean {
    return this.tls !== null;
  }

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
    this.handshakeDeadlines = new Deadlines(this.clock, this.handshakeTimeoutMs * 1e6, () => this.state === 'listening');
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
    this.release(exp);
  }

  /** The export's bitmaps are no longer busy (once its clients are gone, as QEMU's nbd_export_delete). */
  private release(e: ServedExport): void {
    if (this.holding.delete(e)) releaseContexts(e.contexts);
  }

  /**
   * Serves a connection whose handshake another thread did (src/nbd/handover.ts): transmission
   * starts on the descriptor it passed, with the bytes it had read past the handshake.
   */
  adopt(c: HandedConnection): void {
    const socket = new net.Socket({ fd: c.fd, readable: true, writable: true });
    if (this.state === 'closing' || this.state === 'closed') {
      socket.destroy();
      return;
    }
    if (c.head.byteLength > 0) socket.unshift(Buffer.from(c.head.buffer, c.head.byteOffset, c.head.byteLength));
    const conn = new Connection(this, socket);
    this.connections.add(conn);
    void conn.run(c);
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
    for (const e of this.exports.values()) this.release(e);
    this.handshakeDeadlines.clear();
    this.state = 'closed';
  }

  /** Closes the server, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal */
  findExport(name: string): ServedExport | undefined {
    return this.exports.get(name);
  }

  /** @internal */
  allExports(): ServedExport[] {
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
    const contexts = resolveContexts(e, isReadOnly(e));
    const served: ServedExport = { ...e, contexts };
    acquireContexts(contexts);
    this.holding.add(served);
    this.exports.set(e.name, served);
  }

  private accept(socket: net.Socket): void {
    if (this.state !== 'listening') {
      socket.on('error', ignore);
      socket.destroy();
      return;
    }
    if (this.connections.size < this.maxConnections) {
      this.start(socket);
      return;
    }
    // Until it is greeted (or dropped), its errors go nowhere.
    socket.on('error', ignore);
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
    // A connection's own listener takes its errors from here on (a waiting one's are ignored until now).
    socket.off('error', ignore);
    const c = new Connection(this, socket);
    this.connections.add(c);
    void c.run();
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
