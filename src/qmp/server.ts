/**
 * A QMP server over a unix socket or TCP: greets each client, runs its commands in order
 * (one at a time, each client with its own negotiation state) and sends drive I/O errors as
 * BLOCK_IO_ERROR events to the clients that have negotiated.
 */
import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { EventEmitter } from 'eventemitter3';
import { forwardJobEvents } from './job-commands.js';
import type { Drive, IoErrorEvent } from '../drive.js';
import { BlockError, fromErrno } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import { unixListenCause } from '../unix-listen.js';
import { type ExportManager, type QmpSession, runCommand, toQmpError } from './commands.js';
import { errorResponse, eventMessage, frame, greeting, JsonSplitter, parseRequest, QMP_MAX_MESSAGE_BYTES, type SplitItem, successResponse } from './wire.js';

/** Options of a {@link QmpServer}. */
export interface QmpServerOptions {
  /** What block-export-add / block-export-del do; without it they are disabled. */
  exports?: ExportManager;
  /** Largest JSON text accepted from a client, in bytes (default 1 MiB). */
  maxMessageBytes?: number;
  /** Wall-clock time for event timestamps, in milliseconds since the epoch, fractions allowed (default: the system clock, to the microsecond). */
  now?: () => number;
}

/** Where to listen: a unix socket path, or a TCP host and port (port 0: any free port). */
export type QmpListenAddress =
  | {
      /** Path of the unix socket to create. */
      path: string;
    }
  | {
      /** Host name or IP address to listen on. */
      host: string;
      /** TCP port (0: any free port). */
      port: number;
    };

/** Events of a {@link QmpServer}. */
export interface QmpServerEvents {
  /** A client executed `quit`; the server is closing. */
  quit: () => void;
  /** A client's socket failed (the client is dropped; the server goes on). */
  'client-error': (error: Error) => void;
}

/** Commands queued by one client before the server stops reading from it (QEMU's QMP_REQ_QUEUE_LEN_MAX). */
const MAX_QUEUED = 8;
/** Output a client may leave unread before it is disconnected (it stopped reading; events would pile up). */
const MAX_UNREAD_OUTPUT = 16 << 20;

/** IoOperation to QAPI's IoOperationType: everything that is not a read is a write. */
function qapiOperation(op: IoErrorEvent['operation']): 'read' | 'write' {
  return op === 'read' ? 'read' : 'write';
}

class Client {
  readonly session: QmpSession = { negotiated: false, quitRequested: false };
  private readonly splitter: JsonSplitter;
  private readonly queue: SplitItem[] = [];
  private running = false;

  constructor(
    private readonly server: QmpServer,
    readonly socket: net.Socket,
    maxMessageBytes: number,
  ) {
    this.splitter = new JsonSplitter(maxMessageBytes);
    socket.on('data', (chunk: Buffer) => this.received(chunk));
    socket.write(frame(greeting()));
  }

  send(message: unknown): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    if (this.socket.writableLength > MAX_UNREAD_OUTPUT) {
      this.socket.destroy();
      return;
    }
    this.socket.write(frame(message));
  }

  private received(chunk: Buffer): void {
    this.queue.push(...this.splitter.push(chunk));
    if (this.queue.length >= MAX_QUEUED) this.socket.pause();
    if (!this.running) void this.pump();
  }

  private async pump(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0 && !this.socket.destroyed) {
        const item = this.queue.shift()!;
        if (this.queue.length < MAX_QUEUED && this.socket.isPaused()) this.socket.resume();
        await this.handle(item);
        if (this.session.quitRequested) {
          this.server.quitRequested();
          return;
        }
      }
    } finally {
      this.running = false;
    }
  }

  private async handle(item: SplitItem): Promise<void> {
    if ('error' in item) {
      this.send(errorResponse(item.error));
      return;
    }
    const parsed = parseRequest(item.text);
    if ('error' in parsed) {
      this.send(errorResponse(parsed.error, parsed.id));
      return;
    }
    const { request } = parsed;
    try {
      const ret = await runCommand(request, this.server.contextFor(this.session));
      this.send(successResponse(ret, request.id));
    } catch (e) {
      this.send(errorResponse(toQmpError(e), request.id));
    }
  }
}

/**
 * QEMU's QMP monitor over a {@link BlockLayer}: `listen()` on a unix socket or TCP, any number
 * of clients at once. Each drive's `io-error` (including drives opened later) goes out as a
 * BLOCK_IO_ERROR event to every client that has negotiated capabilities.
 */
export class QmpServer extends EventEmitter<QmpServerEvents> {
  private readonly clients = new Set<Client>();
  /** Drives whose events are forwarded, with the function that stops that. */
  private readonly watched = new Map<Drive, () => void>();
  private readonly stopWatching: () => void;
  private readonly now: () => number;
  private readonly maxMessageBytes: number;
  private server: net.Server | null = null;
  private closing: Promise<void> | null = null;

  constructor(
    /** The layer whose drives and nodes the commands act on. */
    readonly layer: BlockLayer,
    private readonly options: QmpServerOptions = {},
  ) {
    super();
    this.now = options.now ?? (() => performance.timeOrigin + performance.now());
    this.maxMessageBytes = options.maxMessageBytes ?? QMP_MAX_MESSAGE_BYTES;
    for (const d of layer.listDrives()) this.watch(d);
    const stopDrives = layer.onDriveOpened((d) => this.watch(d));
    const stopJobs = forwardJobEvents(layer, (event, data) => this.broadcast(event, data));
    const stopExports = options.exports?.watch?.((event, data) => this.broadcast(event, data));
    this.stopWatching = () => {
      stopDrives();
      stopJobs();
      stopExports?.();
    };
  }

  private watch(drive: Drive): void {
    if (this.watched.has(drive) || drive.closed) return;
    const listener = (e: IoErrorEvent) => {
      const data = {
        device: e.device,
        'node-name': e.nodeName,
        operation: qapiOperation(e.operation),
        action: e.action,
        nospace: e.nospace,
        reason: e.reason,
      };
      this.broadcast('BLOCK_IO_ERROR', data);
    };
    const unwatch = () => {
      drive.off('io-error', listener);
      drive.off('closed', unwatch);
      this.watched.delete(drive);
    };
    this.watched.set(drive, unwatch);
    drive.on('io-error', listener);
    drive.on('closed', unwatch);
  }

  /** Sends an event to every client that has negotiated capabilities. */
  broadcast(event: string, data?: Record<string, unknown>): void {
    const message = eventMessage(event, data, this.now() * 1000);
    for (const c of this.clients) if (c.session.negotiated) c.send(message);
  }

  /** @internal what a client's commands run against. */
  contextFor(session: QmpSession) {
    return { layer: this.layer, exports: this.options.exports, session };
  }

  /** @internal a client executed quit (its response is already written). */
  quitRequested(): void {
    this.emit('quit');
    void this.close();
  }

  /** Number of connected clients. */
  get clientCount(): number {
    return this.clients.size;
  }

  /** The bound address: the socket path, or the TCP address (with the port chosen). */
  address(): string | net.AddressInfo | null {
    return this.server?.address() ?? null;
  }

  /**
   * Starts listening. A stale unix socket at `path` (a socket nobody listens on) is replaced;
   * any other file there is left alone and the listen fails.
   */
  async listen(where: QmpListenAddress): Promise<void> {
    if (this.server !== null) throw new BlockError('EBUSY', 'QmpServer: already listening');
    if (this.closing !== null) throw new BlockError('ECLOSED', 'QmpServer: the server is closed');
    if ('path' in where) await removeStaleSocket(where.path);
    const server = net.createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = () => {
        server.off('error', reject);
        resolve();
      };
      if ('path' in where) server.listen(where.path, done);
      else server.listen(where.port, where.host, done);
    }).catch(async (e) => {
      this.server = null;
      const at = 'path' in where ? where.path : `${where.host}:${where.port}`;
      const cause = 'path' in where ? await unixListenCause(e, where.path) : e;
      throw fromErrno(cause, `QMP listen on ${at}`, 'path' in where ? { path: where.path } : {});
    });
  }

  private accept(socket: net.Socket): void {
    if (this.closing !== null) {
      socket.destroy();
      return;
    }
    const client = new Client(this, socket, this.maxMessageBytes);
    this.clients.add(client);
    socket.on('error', (e) => {
      if (this.listenerCount('client-error') > 0) this.emit('client-error', e);
    });
    socket.on('close', () => this.clients.delete(client));
  }

  /** Stops listening, lets each client's pending output go, closes the connections and stops watching drives. */
  close(): Promise<void> {
    this.closing ??= this.closeNow();
    return this.closing;
  }

  private async closeNow(): Promise<void> {
    this.stopWatching();
    for (const unwatch of [...this.watched.values()]) unwatch();
    const server = this.server;
    const closed = server === null ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    for (const c of this.clients) c.socket.destroySoon();
    await closed;
  }

  /** Closes the server, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Removes `path` if it is a unix socket (left by a server that is gone); anything else stays. */
export async function removeStaleSocket(path: string): Promise<void> {
  let isSocket = false;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch {
    return;
  }
  if (!isSocket) return;
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (!live) await unlink(path);
}
