import type net from 'node:net';
import tls from 'node:tls';
import type { EventEmitter } from 'eventemitter3';
import type { Clock, ClockTimer } from '../clock.js';
import type { Drive } from '../drive.js';
import * as P from '../drivers/nbd/protocol.js';
import { ReaderClosed, SocketReader } from '../drivers/nbd/reader.js';
import { isTlsError, type NbdTlsSetup, tlsErrorText } from '../drivers/nbd/tls.js';
import type { BufferPool } from './buffer-pool.js';
import { checkRequest, replyErrorOf, trim, writeZeroes } from './commands.js';
import type { NbdExport } from './export.js';
import { ConnectionBudget } from './connection-budget.js';
import type { Deadlines, Expiring } from './deadlines.js';
import type { MemoryBudget } from './memory-budget.js';
import type { MetaSelection } from './meta-contexts.js';
import { Negotiation, type NegotiationHost, type NegotiationStep } from './negotiation.js';
import { ProtocolViolation } from './protocol-violation.js';
import { decodeServerRequest, readReplyHeaderSize, type ServerRequest, writeReadReplyHeader, writeSimpleReply } from './request.js';
import type { NbdClientInfo, NbdServerEvents } from './server-options.js';
import { ReadJob, type ReadJobHost } from './read-job.js';
import { ReplyBatch } from './reply-batch.js';
import { StatusChunks } from './status-chunks.js';
import { upgradeToTls } from './tls-upgrade.js';
import { agreedOf, type HandedConnection, takeConnection } from './handover.js';
import { HandshakeReplies } from './handshake-replies.js';

/** Unsent option replies past which the server stops reading options until the client takes them. */
const HANDSHAKE_BACKLOG = 256 * 1024;
/** Handshake reply bytes gathered before they are written even though more options are here already. */
const HANDSHAKE_FLUSH = 64 * 1024;
/** Bytes the reader may hold beyond what the parser asked for. */
const READER_SLACK = 256 * 1024;
/** Requests in flight per connection before the server stops reading new ones. */
const MAX_IN_FLIGHT = 64;
/** Reply batch objects kept for reuse per connection. */
const SPARE_BATCHES = 8;
/** The error a batch is given back with when its last frame could not be written. */
const NOT_WRITTEN = new Error('reply not written: the socket has closed');
/** What a read pending at a connection's end rejects with: one for all (an Error's stack costs every connection). */
const ENDING = new ReaderClosed('connection ending');

/** What a connection needs of its server (the NbdServer; an interface so that the server's file imports this one, not the reverse). */
export interface ConnectionHost extends NegotiationHost {
  readonly handshakeTimeoutMs: number;
  /** Handshakes in progress, each cut off after handshakeTimeoutMs. */
  readonly handshakeDeadlines: Deadlines;
  readonly maxRequest: number;
  readonly clock: Clock;
  /** Bytes all connections together may hold for requests. */
  readonly budget: MemoryBudget;
  /** WRITE payload and READ reply buffers for reuse. */
  readonly pool: BufferPool;
  readonly tls: NbdTlsSetup | null;
  emit: EventEmitter<NbdServerEvents>['emit'];
  /** The connection has closed: it leaves the server's set ('disconnect' is emitted). */
  forget(c: Connection, reason: string | undefined): void;
}

/** Per-connection state: handshake, then requests in flight and replies as they complete. */
export class Connection implements ReadJobHost, Expiring {
  private reader: SocketReader;
  /** The plain socket, then the TLS socket over it once NBD_OPT_STARTTLS succeeded. */
  private socket: net.Socket;
  private closeSeen = false;
  private resolveClosed: () => void = () => {};
  private readonly address: string;
  private readonly port: number | undefined;
  /** The option haggling, until an export is selected. */
  private readonly negotiation: Negotiation;
  /** What the handshake agreed on: the export, structured replies, the metadata contexts. */
  private exp: NbdExport | null = null;
  private structured = false;
  private meta: MetaSelection | null = null;
  /** Builds and sends BLOCK_STATUS chunks, keeping their extent arrays for the next request. */
  private readonly status: StatusChunks;
  /** The handshake's deadline in the server's queue, or -1 once the handshake is over. */
  private handshakeTicket = -1;
  private endTimer: ClockTimer | null = null;
  /** Handshake replies not written yet. */
  private readonly pending = new HandshakeReplies();
  /** Replies are being gathered for one write at the end of this event-loop turn. */
  private corked = false;
  private readonly uncork = () => {
    this.corked = false;
    const b = this.batch;
    this.batch = null;
    if (b !== null) this.closeBatch(b);
    this.socket.uncork();
  };
  /** Transmission replies gathered in this turn (written when the socket is uncorked), or null. */
  private batch: ReplyBatch | null = null;
  private readonly spareBatches: ReplyBatch[] = [];
  /** Records of finished READs, for reuse. */
  private readonly spareReads: ReadJob[] = [];
  /** A batch has been handed to the OS (or never will be: `err`): its frames and budget bytes come back. */
  private readonly batchWritten = (b: ReplyBatch, err: Error | null | undefined): void => {
    this.budget.giveBack(b.bytes);
    // Written out: nothing references the frames any more (after an error the socket may still).
    if (!err) for (let i = 0; i < b.pooled.length; i++) this.server.pool.give(b.pooled[i] as Buffer);
    b.reset();
    if (this.spareBatches.length < SPARE_BATCHES) this.spareBatches.push(b);
  };
  /** Resolves once the socket has closed and 'disconnect' was emitted. */
  readonly closed: Promise<void>;
  private inFlight = 0;
  /** Bytes held for requests in flight: WRITE payloads and READ buffers. */
  private inFlightBytes = 0;
  private idleWaiters: (() => void)[] = [];
  private slotWaiter: (() => void) | null = null;
  private stopping = false;
  private readonly stopped = () => this.stopping || this.closeSeen;
  private quiesced: Promise<void> | null = null;
  private loopDone: Promise<void> = Promise.resolve();
  private faultReason: string | undefined;
  /** Budget bytes held by this connection's requests (given back at the latest when the socket closes). */
  private readonly budget: ConnectionBudget;

  constructor(
    private readonly server: ConnectionHost,
    socket: net.Socket,
  ) {
    this.socket = socket;
    this.address = socket.remoteAddress ?? 'unix';
    this.port = socket.remotePort;
    this.reader = new SocketReader(socket, READER_SLACK);
    this.budget = new ConnectionBudget(server.budget);
    this.status = new StatusChunks(server.pool, (frame, pooled) => this.reply(frame, pooled, 0));
    socket.setNoDelay(true);
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    this.watch(socket);
    this.negotiation = new Negotiation(server, (frame) => this.pending.push(frame));
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
      this.handshakeOver();
      this.endTimer?.cancel();
      // Replies that will never be written give their bytes back; a pending wait leaves the queue.
      this.budget.close();
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
    const error: NodeJS.ErrnoException = new Error(`${this.negotiation.tlsActive ? 'TLS error' : 'TLS handshake failed'}: ${tlsErrorText(e)}`, { cause: e });
    if (e.code !== undefined) error.code = e.code;
    return error;
  }

  info(): NbdClientInfo {
    return { address: this.address, ...(this.port === undefined ? {} : { port: this.port }), export: this.exportName };
  }

  /** `handed`: the connection comes from another thread after its handshake; transmission starts at once. */
  async run(handed?: HandedConnection): Promise<void> {
    this.handshakeTicket = this.server.handshakeDeadlines.add(this);
    let loop: () => void = () => {};
    this.loopDone = new Promise<void>((resolve) => {
      loop = resolve;
    });
    try {
      if (handed === undefined) this.pending.push(Negotiation.greeting());
      const selected = await this.handshake(handed);
      this.handshakeOver();
      if (!selected) {
        this.end(true);
        return;
      }
      const to = this.exp?.handover;
      if (to !== undefined) return to(await takeConnection(this.socket, this.reader, agreedOf(this.info(), this.structured, this.meta), (why) => (this.faultReason = why)));
      this.server.emit('connect', this.info());
      await this.transmission();
      await this.idle();
      if (!this.stopping) this.end(true);
    } catch (e) {
      if (e instanceof ReaderClosed) {
        // The peer went away or the server stopped reading: in-flight replies still go out if they can.
        await this.idle();
        if (!this.stopping) this.end(true);
      } else {
        this.fault(e instanceof Error ? e.message : String(e), e);
      }
    } finally {
      loop();
    }
  }

  /** @internal The handshake took longer than handshakeTimeoutMs. */
  expire(): void {
    this.handshakeTicket = -1;
    this.fault(`handshake not finished within ${this.server.handshakeTimeoutMs} ms`);
  }

  private handshakeOver(): void {
    if (this.handshakeTicket >= 0) this.server.handshakeDeadlines.cancel(this.handshakeTicket);
    this.handshakeTicket = -1;
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
   * `asked`: the client ended it (NBD_CMD_DISC, NBD_OPT_ABORT, or the end of its stream).
   */
  end(asked = false): void {
    this.reader.stop(ENDING);
    // The replies of this turn go before the end.
    const b = this.batch;
    this.batch = null;
    if (b !== null) this.closeBatch(b);
    const socket = this.socket;
    if (socket.destroyed || this.endTimer) return;
    // Every reply is with the kernel already, which still delivers it after the close: no shutdown
    // round and no timer, as qemu-nbd closes (a TLS session still ends with its close_notify).
    if (asked && socket.writableLength === 0 && !(socket instanceof tls.TLSSocket)) {
      socket.destroy();
      return;
    }
    const ms = this.server.handshakeTimeoutMs;
    this.endTimer = this.server.clock.setTimer(this.server.clock.now() + ms * 1e6, () => {
      this.faultReason ??= `replies not taken within ${ms} ms of the end`;
      socket.destroy();
    });
    // Once the queued replies are flushed the socket is released even if the peer keeps its side open.
    socket.end(() => socket.destroy());
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
   * Queues one transmission reply, a frame that is one buffer. `pooled`: the buffer the frame lies
   * in goes back to the pool once written (a READ reply's, a BLOCK_STATUS chunk's); `bytes`: budget
   * bytes its request holds until then. Replies of one turn leave together, with one write
   * callback for all (see {@link ReplyBatch}).
   */
  private reply(frame: Uint8Array, pooled: Buffer | null, bytes: number): void {
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) {
      // Never handed to the socket: nothing references the frame.
      if (pooled !== null) this.server.pool.give(pooled);
      this.budget.giveBack(bytes);
      return;
    }
    let b = this.batch;
    if (b === null) {
      b = this.spareBatches.pop() ?? new ReplyBatch(this.batchWritten);
      b.last = frame;
      if (pooled !== null) b.pooled.push(pooled);
      b.bytes = bytes;
      // The reply of the only request in flight, with no other request received: nothing could
      // join it this turn, so it leaves at once (a client that waits for each reply, as nbdinfo --map does).
      if (!this.corked && this.inFlight <= 1 && this.reader.buffered === 0) {
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

  /** Writes a batch's last frame with the batch's callback (or gives its bytes back if the socket cannot write). */
  private closeBatch(b: ReplyBatch): void {
    const last = b.last;
    if (last !== null && !this.socket.destroyed && this.socket.writable) {
      this.socket.write(last, b.written);
      return;
    }
    // Frames already given to a socket that has gone may still be referenced: they are not pooled.
    this.batchWritten(b, last === null ? null : NOT_WRITTEN);
  }

  // ---- handshake ------------------------------------------------------------------------

  /** Drives the option haggling from the socket; true once an export is selected, false when the client aborted. */
  private async handshake(handed: HandedConnection | undefined): Promise<boolean> {
    const neg = this.negotiation;
    for (;;) {
      // A client that sends options without reading the replies must not make them pile up here.
      if (neg.awaitingOption) {
        if (this.pending.bytes >= HANDSHAKE_FLUSH) this.pending.flush(this.socket);
        while (!this.stopping && !this.socket.destroyed && this.socket.writableLength > HANDSHAKE_BACKLOG) {
          await new Promise<void>((resolve) => {
            this.slotWaiter = resolve;
          });
        }
      }
      let step: NegotiationStep;
      if (handed !== undefined) step = neg.adopt(handed);
      else {
        // The bytes of options sent together are here already: their replies wait for the next flush.
        let bytes = this.reader.readNow(neg.need);
        if (bytes === null) {
          this.pending.flush(this.socket);
          bytes = await this.reader.read(neg.need);
        }
        step = neg.take(bytes);
      }
      if (step !== 'more') this.pending.flush(this.socket);
      if (step === 'more') continue;
      if (step === 'starttls') {
        await upgradeToTls(this.socket, this.reader, this.server.tls as NbdTlsSetup, (secure) => {
          this.socket = secure;
          this.reader = new SocketReader(secure, READER_SLACK);
          this.watch(secure);
        });
        neg.tlsStarted();
        continue;
      }
      if (step === 'abort') return false;
      this.exp = neg.selected;
      this.structured = neg.structured;
      this.meta = neg.meta !== null && neg.meta.count > 0 ? neg.meta : null;
      return true;
    }
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
      if (bytes > 0 && !this.budget.tryTake(bytes) && !(await this.budget.reserve(bytes, this.stopped))) return;
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
      if (req.type === P.NBD_CMD_READ) this.read(req, bytes);
      else if (req.type === P.NBD_CMD_BLOCK_STATUS && this.meta !== null && !this.meta.allocation && !this.meta.depth) this.bitmapStatus(req);
      else void this.serve(req, payload, bytes);
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
    if (this.stopping || this.closeSeen) this.budget.cancelWait();
  }

  private idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Runs one request on the drive and sends its reply; the request's budget bytes (`bytes`) go
   * back once the reply has been written. Then it leaves the in-flight count. Never rejects.
   */
  private async serve(req: ServerRequest, payload: Buffer | null, bytes: number): Promise<void> {
    try {
      checkRequest(req, this.exp as NbdExport, this.server.maxRequest, this.meta !== null);
      switch (req.type) {
        case P.NBD_CMD_BLOCK_STATUS:
          await this.status.all(req, this.drive, this.meta as MetaSelection);
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
          await trim(this.drive, req);
          break;
        case P.NBD_CMD_WRITE_ZEROES:
          await writeZeroes(this.drive, req);
          break;
        case P.NBD_CMD_CACHE:
          // Advisory: nothing to prefetch into (the drive has its own caches, if any).
          break;
      }
      const reply = Buffer.allocUnsafe(P.SIMPLE_REPLY_SIZE);
      writeSimpleReply(reply, req, P.NBD_SUCCESS);
      this.reply(reply, null, bytes);
    } catch (e) {
      this.sendError(req, e, bytes);
    } finally {
      this.settled(bytes);
    }
  }

  /** A request has been answered: it leaves the in-flight count and a wait for a slot may end. */
  private settled(bytes: number): void {
    this.inFlight--;
    this.inFlightBytes -= bytes;
    this.wakeSlot();
    if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private get drive(): Drive {
    return (this.exp as NbdExport).drive;
  }

  /**
   * Reads straight into the reply: one buffer holds the reply header and, behind it, the data the
   * drive fills, so the reply leaves in one socket write. The buffer is reused once written out.
   */
  private read(req: ServerRequest, bytes: number): void {
    try {
      checkRequest(req, this.exp as NbdExport, this.server.maxRequest, this.meta !== null);
    } catch (e) {
      this.sendError(req, e, bytes);
      this.settled(bytes);
      return;
    }
    if (req.length === 0) {
      if (this.structured) this.reply(P.encodeStructuredReplyHeader(req.cookie, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, 0), null, bytes);
      else this.reply(P.encodeSimpleReply(req.cookie, P.NBD_SUCCESS), null, bytes);
      this.settled(bytes);
      return;
    }
    const job = this.spareReads.pop() ?? new ReadJob(this);
    job.req = req;
    job.bytes = bytes;
    job.frame = this.server.pool.take(readReplyHeaderSize(this.structured) + req.length);
    let done: Promise<unknown>;
    try {
      done = this.drive.read(req.offset, job.frame.subarray(readReplyHeaderSize(this.structured)));
    } catch (e) {
      done = Promise.reject(e);
    }
    done.then(job.done, job.failed);
  }

  /** @internal A READ's data is in its frame: the reply goes, the frame back to the pool once written. */
  readDone(job: ReadJob): void {
    const req = job.req as ServerRequest;
    const { frame, bytes } = job;
    this.releaseJob(job);
    writeReadReplyHeader(frame, req, this.structured);
    this.reply(frame, frame, bytes);
    this.settled(bytes);
  }

  /** @internal A READ failed: an error reply; the frame is not reused (a driver may still be using pieces of it). */
  readFailed(job: ReadJob, e: unknown): void {
    const req = job.req as ServerRequest;
    const bytes = job.bytes;
    this.releaseJob(job);
    this.sendError(req, e, bytes);
    this.settled(bytes);
  }

  private releaseJob(job: ReadJob): void {
    job.clear();
    if (this.spareReads.length < MAX_IN_FLIGHT) this.spareReads.push(job);
  }

  /** BLOCK_STATUS when only bitmaps are selected: served synchronously (see StatusChunks.bitmapsOnly). */
  private bitmapStatus(req: ServerRequest): void {
    try {
      checkRequest(req, this.exp as NbdExport, this.server.maxRequest, true);
      this.status.bitmapsOnly(req, this.meta as MetaSelection);
    } catch (e) {
      this.sendError(req, e, 0);
    } finally {
      this.settled(0);
    }
  }

  /** The error reply of a failed request; `bytes`: budget bytes it holds until the reply is written. */
  private sendError(req: P.NbdRequest, e: unknown, bytes: number): void {
    const error = replyErrorOf(e);
    const message = e instanceof Error ? e.message : String(e);
    this.reply(this.structured ? P.encodeErrorChunk(req.cookie, P.NBD_REPLY_FLAG_DONE, error, message) : P.encodeSimpleReply(req.cookie, error), null, bytes);
  }
}

