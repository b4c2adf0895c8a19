import type { Clock } from '../../clock.js';
import { BlockError, type BlockErrorCode } from '../../errors.js';
import { type Validators, acceptsByteRanges, compareValidators, ifRangeValue, parseContentLength, parseContentRange, validatorsOf } from './headers.js';
import { TransientError, backoffDelay, isRetryableStatus, sleep } from './retry.js';
import type { HeaderLookup, HttpAnswer, HttpMethod, HttpTransport } from './transport.js';

/** How one {@link HttpRangeClient} talks to its server. */
export interface HttpClientOptions {
  /** The file's URL, without credentials (fetch refuses them; they travel as an Authorization header). */
  url: string;
  /** Extra headers sent with every request (Authorization, Cookie, …). */
  headers: Readonly<Record<string, string>>;
  /** Deadline of one request, headers and body, in milliseconds. */
  timeoutMs: number;
  /** Further attempts after a transient failure. */
  retries: number;
  /** Wait before the first retry, in milliseconds; doubled for each further one. */
  retryDelayMs: number;
  /** Node name, for error context. */
  node?: string;
  /** What sends the requests (fetch or node:http); closed with the client. */
  transport: HttpTransport;
  /** Time of request deadlines and retry waits: the layer's clock (a VirtualClock moves them only when advanced). */
  clock: Clock;
}

/** The URL as error messages show it: no credentials, and the query (often a signature or token) elided. */
export function displayUrl(url: string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname}${u.search ? '?…' : ''}`;
}

/** base64 of a string's UTF-8 bytes (btoa alone takes Latin-1 only). */
function base64Utf8(s: string): string {
  let bin = '';
  for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
  return btoa(bin);
}

/**
 * Moves `user:password@` out of a URL (fetch refuses URLs with credentials) into a Basic
 * Authorization header, unless `headers` already has one; returns the URL without them.
 */
export function credentialsToHeader(url: string, headers: Record<string, string>): string {
  const u = new URL(url);
  if (u.username === '' && u.password === '') return u.href;
  if (!Object.keys(headers).some((k) => k.toLowerCase() === 'authorization')) {
    headers.Authorization = `Basic ${base64Utf8(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`)}`;
  }
  u.username = '';
  u.password = '';
  return u.href;
}

/** The error code for a final HTTP status: not found, no access, or an I/O failure. */
function codeForStatus(status: number): BlockErrorCode {
  if (status === 404 || status === 410) return 'ENOENT';
  if (status === 401 || status === 403) return 'EACCES';
  if (status === 412) return 'ESTALE';
  return 'EIO';
}

/**
 * Byte-range reads of one remote file over HTTP(S) through a {@link HttpTransport} (fetch or node:http):
 * size and validators learnt at {@link open}, every read checked against them (206, exact
 * Content-Range, exact length, same ETag), transient failures retried with exponential backoff,
 * and everything in flight aborted by {@link close}.
 */
export class HttpRangeClient {
  /** File size in bytes, known after open. */
  size = 0;
  /** ETag / Last-Modified of the version opened; reads of any other version are refused. */
  validators: Validators = {};
  /** Requests sent so far (each attempt counts). */
  requests = 0;
  /** How the size was learnt: a HEAD answer or a one-byte range GET. */
  probedWith: 'HEAD' | 'GET' | undefined;
  private readonly closer = new AbortController();
  private readonly shown: string;
  /** The caller's headers with lower-case names, and Accept-Encoding: identity (ranges count stored bytes, not compressed ones). */
  private readonly baseHeaders: Record<string, string>;

  private readonly clock: Clock;

  constructor(private readonly options: HttpClientOptions) {
    this.clock = options.clock;
    this.shown = displayUrl(options.url);
    this.baseHeaders = {};
    for (const [k, v] of Object.entries(options.headers)) this.baseHeaders[k.toLowerCase()] = v;
    this.baseHeaders['accept-encoding'] = 'identity';
  }

  /** Learns size and validators, and makes sure the server serves byte ranges (ENOTSUP if not). */
  async open(): Promise<void> {
    const head = await this.withRetries('HEAD', 0, () =>
      this.attempt('HEAD', this.baseHeaders, async (res) => {
        if (isRetryableStatus(res.status)) throw new TransientError(`HTTP ${res.status} ${res.statusText}`);
        return { status: res.status, headers: res.headers };
      }),
    );
    const status = head.status;
    if (status === 404 || status === 410 || status === 401 || status === 403) {
      throw this.error(codeForStatus(status), `HEAD ${this.shown}: HTTP ${status}`);
    }
    const length = parseContentLength(head.headers.get('content-length'));
    if (status >= 200 && status < 300 && length !== undefined && acceptsByteRanges(head.headers.get('accept-ranges')) && isIdentity(head.headers)) {
      this.size = length;
      this.validators = validatorsOf(head.headers);
      this.probedWith = 'HEAD';
      return;
    }
    // HEAD refused, or silent about ranges: ask for one byte and see whether the server honours Range.
    await this.withRetries('range probe', 0, () => this.attempt('GET', { ...this.baseHeaders, range: 'bytes=0-0' }, (res) => this.takeProbe(res)));
    this.probedWith = 'GET';
  }

  private async takeProbe(res: HttpAnswer): Promise<void> {
    if (res.status === 206) {
      const cr = parseContentRange(res.headers.get('content-range'));
      if (cr === undefined || 'unsatisfied' in cr || cr.first !== 0 || cr.size === undefined) {
        throw this.error('EIO', `GET ${this.shown} bytes=0-0: bad Content-Range '${res.headers.get('content-range')}'`);
      }
      this.size = cr.size;
      this.validators = validatorsOf(res.headers);
      await res.drain();
      return;
    }
    if (res.status === 416) {
      // Nothing is satisfiable in an empty file; its size comes as `bytes */0`.
      const cr = parseContentRange(res.headers.get('content-range'));
      if (cr !== undefined && 'unsatisfied' in cr && cr.size === 0) {
        this.size = 0;
        this.validators = validatorsOf(res.headers);
        return;
      }
    }
    if (res.status >= 200 && res.status < 300) {
      // The whole file is on its way: stop it (attempt aborts the request) rather than download it.
      throw this.error('ENOTSUP', `${this.shown}: the server does not support byte ranges (HTTP ${res.status} to a Range request)`);
    }
    if (isRetryableStatus(res.status)) throw new TransientError(`HTTP ${res.status} ${res.statusText}`);
    throw this.error(codeForStatus(res.status), `GET ${this.shown} bytes=0-0: HTTP ${res.status} ${res.statusText}`);
  }

  /** Fills `buffer` with the bytes at `offset` of the version opened; retried, then EIO naming url and offset. */
  read(offset: number, buffer: Uint8Array): Promise<void> {
    if (buffer.length === 0) return Promise.resolve();
    const last = offset + buffer.length - 1;
    const headers: Record<string, string> = { ...this.baseHeaders, range: `bytes=${offset}-${last}` };
    const ifRange = ifRangeValue(this.validators);
    if (ifRange !== undefined) headers['if-range'] = ifRange;
    return this.withRetries(`read of ${buffer.length} bytes`, offset, () =>
      this.attempt('GET', headers, (res) => this.takeRange(res, offset, buffer, ifRange !== undefined)),
    );
  }

  private async takeRange(res: HttpAnswer, offset: number, buffer: Uint8Array, sentIfRange: boolean): Promise<void> {
    const at = `${this.shown} at offset ${offset}`;
    const answer = validatorsOf(res.headers);
    const changed = compareValidators(this.validators, answer) === 'changed';
    if (res.status === 206) {
      if (changed) throw this.stale(at, answer, offset);
      const cr = parseContentRange(res.headers.get('content-range'));
      const last = offset + buffer.length - 1;
      if (cr === undefined || 'unsatisfied' in cr || cr.first !== offset || cr.last !== last) {
        throw this.error('EIO', `${at}: asked for bytes ${offset}-${last}, got Content-Range '${res.headers.get('content-range')}'`, offset);
      }
      if (cr.size !== undefined && cr.size !== this.size) throw this.error('ESTALE', `${at}: the file is now ${cr.size} bytes, was ${this.size} when opened`, offset);
      if (!isIdentity(res.headers)) throw this.error('EIO', `${at}: encoded answer (Content-Encoding: ${res.headers.get('content-encoding')})`, offset);
      await this.readBody(res, buffer, at, offset);
      return;
    }
    if (res.status === 200) {
      if (changed) throw this.stale(at, answer, offset);
      const why = sentIfRange ? 'the file changed (If-Range failed) or the server ignores Range' : 'the server ignores Range';
      throw this.error(sentIfRange && answer.etag === undefined && answer.lastModified === undefined ? 'ESTALE' : 'EIO', `${at}: HTTP 200 (whole file) to a range request: ${why}`, offset);
    }
    if (isRetryableStatus(res.status)) throw new TransientError(`HTTP ${res.status} ${res.statusText}`);
    throw this.error(codeForStatus(res.status), `${at}: HTTP ${res.status} ${res.statusText}`, offset);
  }

  /** Streams the body into `buffer`: exactly its length, else transient (short) or EIO (too long). */
  private async readBody(res: HttpAnswer, buffer: Uint8Array, at: string, offset: number): Promise<void> {
    const got = await res.readInto(buffer);
    if (got > buffer.length) throw this.error('EIO', `${at}: body longer than the ${buffer.length} bytes asked for`, offset);
    if (got < buffer.length) throw new TransientError(`short body: ${got} of ${buffer.length} bytes`);
  }

  private stale(at: string, answer: Validators, offset: number): BlockError {
    const was = this.validators.etag ?? this.validators.lastModified;
    const now = answer.etag ?? answer.lastModified;
    return this.error('ESTALE', `${at}: the file changed since it was opened (${was} → ${now}); refusing to mix two versions`, offset);
  }

  /**
   * One request with its own deadline, aborted by close. `take` checks the answer and reads its body;
   * a network failure or the deadline becomes a TransientError; a refused answer's transfer is cut.
   */
  private async attempt<T>(method: HttpMethod, headers: Record<string, string>, take: (res: HttpAnswer) => Promise<T>): Promise<T> {
    if (this.closer.signal.aborted) throw this.closedError();
    const controller = new AbortController();
    let timedOut = false;
    const timer = this.clock.setTimer(this.clock.now() + this.options.timeoutMs * 1e6, () => {
      timedOut = true;
      controller.abort();
    });
    const onClose = () => controller.abort();
    this.closer.signal.addEventListener('abort', onClose, { once: true });
    let done = false;
    try {
      this.requests++;
      const res = await this.options.transport.request(this.options.url, method, headers, controller.signal);
      const value = await take(res);
      done = true;
      return value;
    } catch (e) {
      if (this.closer.signal.aborted) throw this.closedError();
      if (timedOut) throw new TransientError(`no complete answer within ${this.options.timeoutMs / 1000} s`);
      if (e instanceof BlockError || e instanceof TransientError) throw e;
      // Transports report refused connections, resets and cut bodies as plain errors: worth another attempt.
      throw new TransientError(describe(e));
    } finally {
      timer.cancel();
      this.closer.signal.removeEventListener('abort', onClose);
      // A refused answer may still be streaming (a whole file for a range request): cut it.
      if (!done) controller.abort();
    }
  }

  /** Runs `once` until it succeeds, fails for good, or has failed transiently `retries + 1` times (then EIO). */
  private async withRetries<T>(what: string, offset: number, once: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await once();
      } catch (e) {
        if (!(e instanceof TransientError)) throw e;
        if (attempt >= this.options.retries) {
          throw this.error('EIO', `${what} at offset ${offset} of ${this.shown} failed after ${attempt + 1} attempt(s): ${e.message}`, offset);
        }
        await sleep(this.clock, backoffDelay(attempt + 1, this.options.retryDelayMs), this.closer.signal).catch(() => {
          throw this.closedError();
        });
      }
    }
  }

  /** Aborts every request in flight (they reject with ECLOSED) and refuses new ones. */
  close(): void {
    this.closer.abort();
    this.options.transport.close();
  }

  private closedError(): BlockError {
    return this.error('ECLOSED', `${this.shown}: the http node was closed`);
  }

  private error(code: BlockErrorCode, message: string, offset?: number): BlockError {
    return new BlockError(code, `http: ${message}`, { node: this.options.node, path: this.shown, offset });
  }
}

/** True unless the answer is content-encoded (gzip…): byte ranges must count stored bytes. */
function isIdentity(headers: HeaderLookup): boolean {
  const enc = headers.get('content-encoding');
  return enc === null || enc.trim() === '' || enc.trim().toLowerCase() === 'identity';
}

/** A transport failure's message with its cause (fetch puts the socket error there). */
function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const cause = e.cause instanceof Error ? `: ${e.cause.message}` : '';
  return `${e.message}${cause}`;
}
