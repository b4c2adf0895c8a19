import type net from 'node:net';
import tls from 'node:tls';
import type { EventEmitter } from 'eventemitter3';
import type { Clock, ClockTimer } from '../clock.js';
import type { Drive } from '../drive.js';
import * as P from '../drivers/nbd/protocol.js';
import { ReaderClosed, type ReadWaiter, SocketReader } from '../drivers/nbd/reader.js';
import { isTlsError, type NbdTlsSetup, tlsErrorText } from '../drivers/nbd/tls.js';
import type { BufferPool } from './buffer-pool.js';
import { checkRequest, replyErrorOf } from './commands.js';
import { driveCommand } from './drive-command.js';
import type { NbdExport } from './export.js';
import { ConnectionBudget } from './connection-budget.js';
import type { Deadlines, Expiring } from './deadlines.js';
import type { MemoryBudget } from './memory-budget.js';
import type { MetaSelection } from './meta-contexts.js';
import { Negotiation, type NegotiationHost } from './negotiation.js';
import { ProtocolViolation } from './protocol-violation.js';
import { decodeServerRequest, readReplyHeaderSize, type ServerRequest, writeReadReplyHeader, writeSimpleReply } from './request.js';
import type { NbdClientInfo, NbdServerEvents } from './server-options.js';
import { ReadJob, type ReadJobHost } from './read-job.js';
import { type ReplyOwner, ReplyWriter } from './reply-batch.js';
import { StatusChunks } from './status-chunks.js';
import { upgradeToTls } from './tls-upgrade.js';
import { agreedOf, type HandedConnection, takeConnection } from './handover.js';
import { HandshakeReplies } from './handshake-replies.js';
import { HANDSHAKE_BACKLOG, type OptionsOutcome, stepOptions } from './option-steps.js';

/** Bytes the reader may hold beyond what the parser asked for. */
const READER_SLACK = 256 * 1024;
/** Requests in flight per connection before the server stops reading new ones. */
const MAX_IN_FLIGHT = 64;
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
export class Connection implements ReadJobHost, ReplyOwner, Expiring {
  private reader: SocketReader;
  /** The plain socket, then the TLS socket over it once NBD_OPT_STARTTLS succeeded. */
  private socket: net.Socket;
  private closeSeen = false;
  /** {@link closed} and its resolve, made when something first waits for the close. */
  private closedPromise: Promise<void> | null = null;
  private resolveClosed: (() => void) | null = null;
  private readonly address: string;
  private readonly port: number | undefined;
  /** The option haggling, until an export is selected. */
  private readonly negotiation: Negotiation;
  /** What the handshake agreed on: the export, structured replies, the metadata contexts. */
  private exp: NbdExport | null = null;
  private structured = false;
  private meta: MetaSelection | null = null;
  /** Builds and sends BLOCK_STATUS chunks, keeping their extent arrays for the next request (made when transmission starts). */
  private status: StatusChunks | null = null;
  /** Transmission replies on their way to the socket (made when transmission starts). */
  private replies: ReplyWriter | null = null;
  /** The handshake's deadline in the server's queue, or -1 once the handshake is over. */
  private handshakeTicket = -1;
  private endTimer: ClockTimer | null = null;
  /** Handshake replies not written yet. */
  private readonly pending = new HandshakeReplies();
  /** Records of finished READs, for reuse. */
  private readonly spareReads: ReadJob[] = [];
  private inFlight = 0;
  /** Bytes held for requests in flight: WRITE payloads and READ buffers. */
  private inFlightBytes = 0;
  private idleWaiters: (() => void)[] = [];
  /** Called when a slot may have freed (a reply went, the socket drained, the connection stops): the handshake's wait, or the pump. */
  private slotWaiter: (() => void) | null = null;
  /** Transmission's end, while requests are read: see {@link transmission}. */
  private txOver: ((e: Error | null) => void) | null = null;
  /** The pump is running (a call from inside it returns at once: the running one goes on). */
  private pumping = false;
  /** The option haggling's end, while it waits for the reader (see {@link options}). */
  private optionsDone: ((step: OptionsOutcome | null, e: unknown) => void) | null = null;
  /** The reader's callback once the bytes waited for are here (or it has ended): the option haggling's, then the pump's. */
  private readonly onBytes: ReadWaiter;
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
    socket.setNoDelay(true);
    this.watch(socket);
    this.negotiation = new Negotiation(server, (frame) => this.pending.push(frame));
    const go = () => (this.optionsDone !== null ? this.stepOptions() : this.pump());
    this.onBytes = { resolve: go, reject: go };
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
      this.resolveClosed?.();
    });
    socket.on('drain', () => this.wakeSlot());
  }

  /** Resolves once the socket has closed and 'disconnect' was emitted. */
  get closed(): Promise<void> {
    this.closedPromise ??= this.closeSeen ? Promise.resolve() : new Promise((resolve) => (this.resolveClosed = resolve));
    return this.closedPromise;
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
    this.loopDone = new Promise<void>((resolve) => (loop = resolve));
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
    this.replies?.flush();
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
   * bytes its request holds until then. The reply of the only request in flight, with no other
   * received, leaves at once; others of one turn leave together (see {@link ReplyWriter}).
   */
  private reply(frame: Uint8Array, pooled: Buffer | null, bytes: number): void {
    (this.replies as ReplyWriter).reply(frame, pooled, bytes, this.inFlight <= 1 && this.reader.buffered === 0);
  }

  /** @internal A written reply's pooled frame goes back to the pool (and its budget bytes, {@link giveBack}). */
  give(pooled: Buffer): void {
    this.server.pool.give(pooled);
  }
  /** @internal */
  giveBack(bytes: number): void {
    this.budget.giveBack(bytes);
  }

  // ---- handshake ------------------------------------------------------------------------

  /** Drives the option haggling from the socket; true once an export is selected, false when the client aborted. */
  private async handshake(handed: HandedConnection | undefined): Promise<boolean> {
    const neg = this.negotiation;
    for (;;) {
      const step = handed !== undefined ? (neg.adopt(handed) as OptionsOutcome) : await this.options();
      if (step === 'backlog') {
        while (!this.stopping && !this.socket.destroyed && this.socket.writableLength > HANDSHAKE_BACKLOG) {
          await new Promise<void>((resolve) => {
            this.slotWaiter = resolve;
          });
        }
        continue;
      }
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

  /** The option haggling until it needs more than the bytes the reader calls back with (one promise, not one per option). */
  private options(): Promise<OptionsOutcome> {
    return new Promise((resolve, reject) => {
      this.optionsDone = (step, e) => (step !== null ? resolve(step) : reject(e));
      this.stepOptions();
    });
  }

  private stepOptions(): void {
    const done = this.optionsDone as NonNullable<typeof this.optionsDone>;
    let step: OptionsOutcome | null;
    try {
      step = stepOptions(this.negotiation, this.reader, this.pending, this.socket, this.stopping, this.onBytes);
    } catch (e) {
      step = null;
      this.optionsDone = null;
      done(null, e);
    }
    if (step === null) return;
    this.optionsDone = null;
    done(step, null);
  }

  // ---- transmission ---------------------------------------------------------------------

  /**
   * Serves requests until the client disconnects, the connection stops or fails. Driven by the
   * reader and by replies: see {@link pump}. Resolves when no more requests will be read (in-flight
   * ones may still be running); rejects with what ended it otherwise (ReaderClosed: the stream ended).
   */
  private transmission(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.txOver = (e) => {
        this.txOver = null;
        if (e === null) resolve();
        else reject(e);
      };
      this.replies = new ReplyWriter(this.socket, this);
      this.status = new StatusChunks(this.server.pool, (frame, pooled) => this.reply(frame, pooled, 0));
      this.pump();
    });
  }

  /**
   * Takes the requests received so far, with no promise per request: each is answered at once
   * (BLOCK_STATUS of bitmaps) or started (READ, and the rest on the drive). When it must wait it
   * leaves itself to be called again: by the reader once the next request's bytes are here, by
   * {@link wakeSlot} once a request in flight has replied or the socket drained. Only a request that
   * waits for budget bytes or for the rest of its WRITE payload takes the async path ({@link slowRequest}).
   */
  private pump(): void {
    if (this.pumping || this.txOver === null) return;
    this.pumping = true;
    try {
      const maxRequest = this.server.maxRequest;
      for (;;) {
        if (this.mustWait()) {
          this.slotWaiter = this.onBytes.resolve;
          return;
        }
        if (this.stopping) {
          this.endTransmission(null);
          return;
        }
        const req = this.nextRequest();
        if (req === null) {
          // Nothing more received: the reader calls back once the next header is here (it throws if it has ended).
          if (!this.reader.whenBuffered(P.REQUEST_SIZE, this.onBytes)) return;
          continue;
        }
        // READ data and WRITE payloads count against the server-wide budget until their reply is written.
        const bytes = (req.type === P.NBD_CMD_WRITE || req.type === P.NBD_CMD_READ) && req.length <= maxRequest ? req.length : 0;
        if (bytes > 0 && !this.budget.tryTake(bytes)) {
          void this.slowRequest(req, bytes, false);
          return;
        }
        if (!this.take(req, bytes)) return;
      }
    } catch (e) {
      this.endTransmission(e);
    } finally {
      this.pumping = false;
    }
  }

  /** The next request if its header is here, else null. */
  private nextRequest(): ServerRequest | null {
    try {
      // Decoded where it lies in the received chunk when it is all here (the usual case).
      return this.reader.decodeNow(P.REQUEST_SIZE, decodeServerRequest);
    } catch (e) {
      if (e instanceof P.NbdProtocolError) throw new ProtocolViolation(e.message);
      throw e;
    }
  }

  /**
   * Takes a request whose budget bytes are held: its payload, then it is started. False when the
   * pump stops here: the transmission ended (NBD_CMD_DISC), or the payload is not all here yet
   * (the async path reads it and starts the pump again).
   */
  private take(req: ServerRequest, bytes: number): boolean {
    if (req.type === P.NBD_CMD_DISC) {
      // No reply: in-flight requests finish, then the connection ends.
      this.endTransmission(null);
      return false;
    }
    let payload: Buffer | null = null;
    if (req.type === P.NBD_CMD_WRITE) {
      const maxRequest = this.server.maxRequest;
      // The payload cannot be skipped safely when it is larger than we accept: drop the client.
      if (req.length > maxRequest) throw new ProtocolViolation(`NBD_CMD_WRITE of ${req.length} bytes exceeds the maximum ${maxRequest}`);
      // Copied out of the received chunks into a reused buffer (the copy a fresh buffer needed too).
      payload = this.server.pool.take(req.length);
      if (!this.reader.fillNow(payload)) {
        void this.slowRequest(req, bytes, true, payload);
        return false;
      }
    }
    // No payload otherwise, as QEMU reads it: only WRITE carries one of the commands we offer (an
    // unknown command is answered EINVAL by serve(); its length says nothing about a payload).
    this.start(req, payload, bytes);
    return true;
  }

  /** A request that waits: for its budget bytes (`held` false), or for the rest of its WRITE payload. Then the pump goes on. */
  private async slowRequest(req: ServerRequest, bytes: number, held: boolean, payload?: Buffer): Promise<void> {
    try {
      if (!held) {
        if (!(await this.budget.reserve(bytes, this.stopped))) {
          this.endTransmission(null);
          return;
        }
        if (!this.take(req, bytes)) return;
      } else {
        await this.reader.fill(payload as Buffer);
        this.start(req, payload as Buffer, bytes);
      }
    } catch (e) {
      this.endTransmission(e);
      return;
    }
    this.pump();
  }

  /** No more requests will be read: `e` null when the client or the server ended it, else why it failed. */
  private endTransmission(e: unknown): void {
    this.slotWaiter = null;
    this.txOver?.(e === null ? null : e instanceof Error ? e : new Error(String(e)));
  }

  /** Starts a request that has been read whole. */
  private start(req: ServerRequest, payload: Buffer | null, bytes: number): void {
    this.inFlight++;
    this.inFlightBytes += bytes;
    if (req.type === P.NBD_CMD_READ) this.read(req, bytes);
    else if (req.type === P.NBD_CMD_BLOCK_STATUS && this.meta !== null && !this.meta.allocation && !this.meta.depth) this.bitmapStatus(req);
    else void this.serve(req, payload, bytes);
  }

  /**
   * Whether the pump must wait before it reads another request: too many requests or bytes in
   * flight, or the socket backed up by a client that does not read its replies. What a connection
   * holds stays bounded by about 2 × maxRequest of requests plus maxRequest of unsent replies.
   */
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
      if (!(await driveCommand(req, this.drive, payload, this.server.pool, this.status as StatusChunks, this.meta))) return;
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
      (this.status as StatusChunks).bitmapsOnly(req, this.meta as MetaSelection);
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

