/**
 * A small HTTP/1.1 client for plain http: GET and HEAD, one request at a time per kept-alive
 * connection. Its reason to exist is speed: node:http allocates a buffer per socket read and runs
 * every chunk through streams (about 2.8 ms of CPU per MiB here); this reads with `onread`, into a
 * fixed scratch buffer for headers and straight into the caller's buffer for a Content-Length
 * body (about 0.7 ms per MiB). Node only: it is part of the node transport (node-transport.ts);
 * http1-pool.ts keeps these connections per origin.
 */
import net from 'node:net';
import type { HeaderLookup, HttpAnswer } from './transport.js';

const SCRATCH_SIZE = 64 * 1024;
/** Largest status line plus headers accepted. */
const MAX_HEAD = 64 * 1024;

/** Where a connection is in its answer. */
const State = {
  /** The request sent, its answer's head being read. */
  Head: 0,
  /** A body of known length: `remaining` bytes to come. */
  Length: 1,
  /** Chunked body: reading a chunk-size line. */
  ChunkSize: 2,
  /** Chunked body: `remaining` bytes of chunk data to come. */
  ChunkData: 3,
  /** Chunked body: the CRLF after a chunk's data. */
  ChunkEnd: 4,
  /** Chunked body: trailer lines up to the empty one. */
  Trailers: 5,
  /** A body delimited by the end of the connection. */
  UntilClose: 6,
  /** No request, or between answers. */
  Idle: 7,
} as const;
type State = (typeof State)[keyof typeof State];

class Http1Headers implements HeaderLookup {
  constructor(private readonly map: Map<string, string>) {}
  get(name: string): string | null {
    return this.map.get(name.toLowerCase()) ?? null;
  }
}

/** One answer on an {@link Http1Connection}: its head, and its body as it arrives. */
export class Http1Answer implements HttpAnswer {
  readonly headers: Http1Headers;
  /** The caller's buffer, once readInto gave it. */
  sink: Uint8Array | undefined;
  got = 0;
  /** Body bytes that came before readInto (copies), and whether the body has ended. */
  early: Uint8Array[] | undefined;
  ended = false;
  failure: Error | undefined;
  private settle: ((n: number) => void) | undefined;
  private reject: ((e: Error) => void) | undefined;

  constructor(
    readonly status: number,
    readonly statusText: string,
    headers: Map<string, string>,
    /** Content-Length of the body, when framed by it. */
    readonly length: number | undefined,
  ) {
    this.headers = new Http1Headers(headers);
  }

  readInto(buffer: Uint8Array): Promise<number> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    // A body announced longer than the buffer is refused without reading it.
    if (this.length !== undefined && this.length > buffer.length) return Promise.resolve(this.length);
    this.sink = buffer;
    if (this.early !== undefined) {
      const early = this.early;
      this.early = undefined;
      for (const piece of early) this.deliver(piece, 0, piece.length);
    }
    if (this.ended || this.got > buffer.length) return Promise.resolve(this.got);
    return new Promise((resolve, reject) => {
      this.settle = resolve;
      this.reject = reject;
    });
  }

  drain(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    this.sink = DISCARD;
    this.early = undefined;
    if (this.ended) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.settle = () => resolve();
      this.reject = reject;
    });
  }

  /** Body bytes `src[start, end)` arrived (not read straight into the sink). */
  deliver(src: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (n === 0) return;
    const sink = this.sink;
    if (sink === undefined) {
      if (this.early === undefined) this.early = [];
      this.early.push(src.slice(start, end));
      return;
    }
    if (sink === DISCARD) return;
    if (this.got + n > sink.length) {
      this.got += n;
      this.finish();
      return;
    }
    sink.set(src.subarray(start, end), this.got);
    this.got += n;
  }

  /** The body has ended. */
  end(): void {
    this.ended = true;
    this.finish();
  }

  fail(e: Error): void {
    if (this.ended || this.failure !== undefined) return;
    this.failure = e;
    const reject = this.reject;
    this.settle = this.reject = undefined;
    reject?.(e);
  }

  private finish(): void {
    const settle = this.settle;
    this.settle = this.reject = undefined;
    settle?.(this.got);
  }
}

/** A sink that takes any body and keeps nothing (drain). */
const DISCARD = new Uint8Array(0);

/** Pending request on a connection: its answer's head is awaited. */
interface Waiting {
  method: 'GET' | 'HEAD';
  resolve: (a: Http1Answer) => void;
  reject: (e: Error) => void;
}

/**
 * One HTTP/1.1 connection to one origin. {@link send} writes a request and resolves with its
 * answer once the head has been read; the body then arrives into the answer. `onIdle` is called
 * when the connection can take the next request, `onGone` when it cannot be used any more.
 */
export class Http1Connection {
  private readonly socket: net.Socket;
  private readonly scratch = Buffer.allocUnsafe(SCRATCH_SIZE);
  private head = Buffer.allocUnsafe(1024);
  private headLength = 0;
  /** Where the head line being read starts in `head` (0 for chunk lines). */
  private lineStart = 0;
  private state: State = State.Idle;
  private remaining = 0;
  private keepAlive = true;
  private waiting: Waiting | undefined;
  private answer: Http1Answer | undefined;
  /** Any byte of the current answer received (a reused connection that fails before is worth a fresh one). */
  received = false;
  /** Requests sent on this connection. */
  uses = 0;
  /** The pool's name for its origin. */
  key = '';
  gone = false;

  constructor(
    host: string,
    port: number,
    private readonly onIdle: (c: Http1Connection) => void,
    private readonly onGone: (c: Http1Connection) => void,
  ) {
    this.socket = net.connect({ host, port, noDelay: true, onread: { buffer: () => this.nextBuffer(), callback: (n, buf) => this.onRead(n, buf) } });
    this.socket.on('end', () => this.onEnd());
    this.socket.on('error', (e) => this.lose(e));
    this.socket.on('close', () => this.lose(new Error('connection closed')));
    // With onread no data is pushed into the stream; flowing mode makes it report the end.
    this.socket.resume();
  }

  /** Sends one request (its head only: GET and HEAD have no body). */
  send(method: 'GET' | 'HEAD', head: string, signal: AbortSignal): Promise<Http1Answer> {
    this.uses++;
    this.received = false;
    this.state = State.Head;
    this.headLength = this.lineStart = 0;
    if (signal.aborted) {
      this.destroy();
      return Promise.reject(signal.reason);
    }
    this.signal = signal;
    signal.addEventListener('abort', this.onAbort);
    return new Promise((resolve, reject) => {
      this.waiting = { method, resolve, reject };
      this.socket.write(head, 'latin1');
    });
  }

  /** The request's signal: aborting it ends the connection, failing the answer. */
  private signal: AbortSignal | undefined;
  private readonly onAbort = () => this.destroy();

  private unlisten(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.signal = undefined;
  }

  /** Ends the connection at once (abort, refused answer, shutdown). */
  destroy(): void {
    this.socket.destroy();
    this.lose(new Error('connection closed'));
  }

  /** Lets an idle connection's socket not keep the process alive. */
  unref(): void {
    this.socket.unref();
  }
  ref(): void {
    this.socket.ref();
  }

  /** Where the next socket read goes: straight into the caller's buffer inside a sized body, else scratch. */
  private nextBuffer(): Uint8Array {
    const a = this.answer;
    if (this.state === State.Length && a !== undefined && a.sink !== undefined && a.early === undefined) {
      const room = a.sink.length - a.got;
      if (room >= this.remaining && this.remaining >= 4096) return a.sink.subarray(a.got, a.got + this.remaining);
    }
    return this.scratch;
  }

  private onRead(n: number, buf: Uint8Array): boolean {
    this.received = true;
    try {
      if (buf !== this.scratch) {
        // Read straight into the sink: only count it.
        const a = this.answer as Http1Answer;
        a.got += n;
        this.remaining -= n;
        if (this.remaining === 0) this.bodyEnded();
        return true;
      }
      let i = 0;
      while (i < n && !this.gone) i = this.consume(buf, i, n);
    } catch (e) {
      this.fail(e instanceof Error ? e : new Error(String(e)));
    }
    return true;
  }

  /** Consumes bytes from `buf[i, n)` in the current state; returns where it stopped. */
  private consume(buf: Uint8Array, i: number, n: number): number {
    switch (this.state) {
      case State.Head:
        return this.takeHead(buf, i, n);
      case State.Length: {
        const take = Math.min(this.remaining, n - i);
        (this.answer as Http1Answer).deliver(buf, i, i + take);
        this.remaining -= take;
        if (this.remaining === 0) this.bodyEnded();
        return i + take;
      }
      case State.UntilClose:
        (this.answer as Http1Answer).deliver(buf, i, n);
        return n;
      case State.ChunkSize:
      case State.Trailers: {
        const end = this.takeLine(buf, i, n);
        if (end < 0) return n;
        const line = this.head.toString('latin1', 0, this.headLength - 2);
        this.headLength = 0;
        if (this.state === State.Trailers) {
          if (line === '') this.bodyEnded();
          return end;
        }
        const m = /^([0-9a-fA-F]{1,12})(?:[ \t]*;.*)?$/.exec(line);
        if (!m) throw new Error(`bad chunk size line '${line.slice(0, 40)}'`);
        this.remaining = Number.parseInt(m[1], 16);
        this.state = this.remaining === 0 ? State.Trailers : State.ChunkData;
        return end;
      }
      case State.ChunkData: {
        const take = Math.min(this.remaining, n - i);
        (this.answer as Http1Answer).deliver(buf, i, i + take);
        this.remaining -= take;
        if (this.remaining === 0) {
          this.state = State.ChunkEnd;
          this.headLength = 0;
        }
        return i + take;
      }
      case State.ChunkEnd: {
        const end = this.takeLine(buf, i, n);
        if (end < 0) return n;
        if (this.headLength !== 2) throw new Error('no CRLF after chunk data');
        this.headLength = 0;
        this.state = State.ChunkSize;
        return end;
      }
      default:
        throw new Error('data from the server while no request was waiting');
    }
  }

  /** Appends bytes up to and including the next LF to `head`; returns the index after it, or -1 (all taken, no LF yet). */
  private takeLine(buf: Uint8Array, i: number, n: number): number {
    const lf = buf.indexOf(10, i);
    const end = lf < 0 || lf >= n ? n : lf + 1;
    this.append(buf, i, end);
    if (end === n && (lf < 0 || lf >= n)) return -1;
    if (this.headLength - this.lineStart < 2 || this.head[this.headLength - 2] !== 13) throw new Error('line not ended by CRLF');
    return end;
  }

  private append(buf: Uint8Array, i: number, end: number): void {
    const need = this.headLength + end - i;
    if (need > MAX_HEAD) throw new Error(`answer head longer than ${MAX_HEAD} bytes`);
    if (need > this.head.length) {
      const bigger = Buffer.allocUnsafe(Math.min(MAX_HEAD, Math.max(need, this.head.length * 2)));
      this.head.copy(bigger, 0, 0, this.headLength);
      this.head = bigger;
    }
    this.head.set(buf.subarray(i, end), this.headLength);
    this.headLength = need;
  }

  /** Takes one line of the head; at the empty line that ends it, parses the head. */
  private takeHead(buf: Uint8Array, i: number, n: number): number {
    if (this.waiting === undefined) throw new Error('data from the server while no request was waiting');
    const end = this.takeLine(buf, i, n);
    if (end < 0) return n;
    if (this.headLength - this.lineStart > 2) {
      this.lineStart = this.headLength;
      return end;
    }
    const text = this.head.toString('latin1', 0, this.lineStart - 2);
    this.headLength = this.lineStart = 0;
    this.parseHead(text);
    return end;
  }

  private parseHead(text: string): void {
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) throw new Error(`bad status line '${lines[0].slice(0, 60)}'`);
    const status = Number(m[2]);
    const headers = new Map<string, string>();
    for (let k = 1; k < lines.length; k++) {
      const line = lines[k];
      const colon = line.indexOf(':');
      if (colon <= 0 || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(line.slice(0, colon))) throw new Error(`bad header line '${line.slice(0, 60)}'`);
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      const had = headers.get(name);
      headers.set(name, had === undefined ? value : `${had}, ${value}`);
    }
    // 1xx: an interim answer; the real one follows.
    if (status >= 100 && status < 200) {
      if (status === 101) throw new Error('unexpected protocol switch (HTTP 101)');
      return;
    }
    const waiting = this.waiting as Waiting;
    this.waiting = undefined;
    const connection = (headers.get('connection') ?? '').toLowerCase();
    this.keepAlive = m[1] === '1' ? !/\bclose\b/.test(connection) : /\bkeep-alive\b/.test(connection);
    const te = headers.get('transfer-encoding');
    const cl = headers.get('content-length');
    let length: number | undefined;
    if (waiting.method === 'HEAD' || status === 204 || status === 304) {
      this.state = State.Idle;
    } else if (te !== undefined) {
      if (!/(^|,)\s*chunked\s*$/i.test(te)) throw new Error(`unsupported Transfer-Encoding '${te}'`);
      this.state = State.ChunkSize;
      // A message with both may have been smuggled: do not reuse the connection.
      if (cl !== undefined) this.keepAlive = false;
    } else if (cl !== undefined) {
      const values = new Set(cl.split(',').map((v) => v.trim()));
      const only = values.size === 1 ? [...values][0] : '';
      if (!/^\d{1,16}$/.test(only)) throw new Error(`bad Content-Length '${cl}'`);
      length = Number(only);
      this.remaining = length;
      this.state = length === 0 ? State.Idle : State.Length;
    } else {
      this.state = State.UntilClose;
      this.keepAlive = false;
    }
    const answer = new Http1Answer(status, m[3] ?? '', headers, length);
    this.answer = answer;
    waiting.resolve(answer);
    if (this.state === State.Idle) this.bodyEnded();
  }

  private bodyEnded(): void {
    const a = this.answer as Http1Answer;
    this.answer = undefined;
    this.state = State.Idle;
    this.unlisten();
    a.end();
    if (this.keepAlive) this.onIdle(this);
    else this.destroy();
  }

  private onEnd(): void {
    if (this.state === State.UntilClose && this.answer !== undefined) {
      this.keepAlive = false;
      this.bodyEnded();
      return;
    }
    this.lose(new Error(this.answer !== undefined ? `connection closed after ${this.answer.got} bytes of the body` : 'connection closed before an answer'));
  }

  /** A malformed answer: fail it and drop the connection. */
  private fail(e: Error): void {
    this.lose(e);
    this.socket.destroy();
  }

  private lose(e: Error): void {
    const waiting = this.waiting;
    const answer = this.answer;
    this.waiting = undefined;
    this.answer = undefined;
    this.unlisten();
    waiting?.reject(e);
    answer?.fail(e);
    if (!this.gone) {
      this.gone = true;
      this.state = State.Idle;
      this.socket.destroy();
      this.onGone(this);
    }
  }
}
