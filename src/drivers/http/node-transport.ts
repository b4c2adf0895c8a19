/**
 * The http driver's transport in Node: plain http through the small HTTP/1.1 client of http1.ts
 * (kept-alive connections, Nagle off, bodies read straight into the caller's buffer), https through
 * node:https with a keep-alive agent per client and body chunks copied into the caller's buffer.
 * Both cost several times less CPU per byte than the global fetch (web streams). Never part of the
 * browser build: only src/drivers/http/default-transport.ts imports it.
 */
import type http from 'node:http';
import https from 'node:https';
import { Http1Pool } from './http1-pool.js';
import type { HeaderLookup, HttpAnswer, HttpMethod, HttpTransport } from './transport.js';

/** Redirects followed per request before giving up, as fetch does. */
const MAX_REDIRECTS = 20;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Headers not carried to another origin by a redirect (what fetch drops too). */
const ORIGIN_BOUND = ['authorization', 'proxy-authorization', 'cookie'];

export class NodeTransport implements HttpTransport {
  readonly kind = 'node';
  private readonly agentOptions: https.AgentOptions & { noDelay: boolean };
  private httpsAgent: https.Agent | undefined;
  private readonly plain: Http1Pool;
  /** The last URL parsed, and its request options: every request of a client names the same file. */
  private lastUrl = '';
  private lastTarget: Target | undefined;

  /**
   * `sockets`: idle connections kept per origin (reads in flight plus read-ahead). More are opened
   * when more requests are in flight at once, as fetch does, so none waits for a connection.
   */
  constructor(sockets: number) {
    this.agentOptions = { keepAlive: true, maxFreeSockets: sockets, scheduling: 'lifo', noDelay: true };
    this.plain = new Http1Pool(sockets);
  }

  async request(url: string, method: HttpMethod, headers: Readonly<Record<string, string>>, signal: AbortSignal): Promise<HttpAnswer> {
    let target = this.target(url);
    let sent = headers;
    for (let hops = 0; ; hops++) {
      const answer = target.https ? new NodeAnswer(await this.once(target, method, sent, signal)) : await this.plain.request(target, method, sent, signal);
      const location = answer.headers.get('location');
      if (!REDIRECTS.has(answer.status) || location === null) return answer;
      // Redirect bodies are small: drop them so the connection goes back to the pool.
      answer.drain().catch(() => undefined);
      if (hops >= MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects`);
      const next = new URL(location, target.href);
      if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new Error(`redirect to a ${next.protocol} URL`);
      if (next.origin !== new URL(target.href).origin) sent = withoutOriginBound(sent);
      target = toTarget(next);
    }
  }

  private target(url: string): Target {
    if (url !== this.lastUrl || this.lastTarget === undefined) {
      this.lastTarget = toTarget(new URL(url));
      this.lastUrl = url;
    }
    return this.lastTarget;
  }

  /** One request with node:https. */
  private once(target: Target, method: HttpMethod, headers: Readonly<Record<string, string>>, signal: AbortSignal): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      this.httpsAgent ??= new https.Agent(this.agentOptions);
      const req = https.request(
        {
          protocol: 'https:',
          hostname: target.hostname,
          port: target.port,
          path: target.path,
          method,
          headers,
          agent: this.httpsAgent,
          signal,
        },
        resolve,
      );
      // After the answer has come, failures reach its body (NodeAnswer); before, they reject here.
      req.on('error', reject);
      req.end();
    });
  }

  close(): void {
    this.plain.close();
    this.httpsAgent?.destroy();
  }
}

interface Target {
  href: string;
  https: boolean;
  hostname: string;
  port: number;
  host: string;
  path: string;
}

function toTarget(u: URL): Target {
  // URL keeps IPv6 literals bracketed; the socket wants them bare.
  const hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  const https_ = u.protocol === 'https:';
  return { href: u.href, https: https_, hostname, port: u.port === '' ? (https_ ? 443 : 80) : Number(u.port), host: u.host, path: `${u.pathname}${u.search}` };
}

function withoutOriginBound(headers: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !ORIGIN_BOUND.includes(k.toLowerCase())));
}

class NodeHeaders implements HeaderLookup {
  constructor(private readonly raw: http.IncomingHttpHeaders) {}

  get(name: string): string | null {
    const v = this.raw[name.toLowerCase()];
    if (v === undefined) return null;
    return Array.isArray(v) ? v.join(', ') : v;
  }
}

/** An answer of node:http; a failure before its body is read is kept for readInto/drain to report. */
class NodeAnswer implements HttpAnswer {
  readonly status: number;
  readonly statusText: string;
  readonly headers: NodeHeaders;
  private failure: Error | undefined;
  /** The 'end' event was seen: the body arrived whole. */
  private ended = false;

  constructor(private readonly res: http.IncomingMessage) {
    this.status = res.statusCode ?? 0;
    this.statusText = res.statusMessage ?? '';
    this.headers = new NodeHeaders(res.headers);
    // Always listened to: an unread answer cut by an abort must not become an uncaught 'error'.
    res.on('error', (e) => {
      this.failure ??= e;
    });
  }

  readInto(buffer: Uint8Array): Promise<number> {
    const res = this.res;
    return new Promise((resolve, reject) => {
      if (this.failure !== undefined) return reject(this.failure);
      let got = 0;
      const onData = (chunk: Buffer) => {
        const end = got + chunk.length;
        if (end > buffer.length) {
          // Too long: stop here; the caller refuses it and aborts the rest.
          finish();
          res.pause();
          return resolve(end);
        }
        buffer.set(chunk, got);
        got = end;
      };
      const onEnd = () => {
        this.ended = true;
        finish();
        resolve(got);
      };
      const onError = (e: Error) => {
        finish();
        reject(e);
      };
      const onClose = () => {
        finish();
        if (!this.ended) reject(this.failure ?? new Error(`connection closed after ${got} bytes of the body`));
      };
      const finish = () => {
        res.off('data', onData);
        res.off('end', onEnd);
        res.off('error', onError);
        res.off('close', onClose);
      };
      res.on('data', onData);
      res.on('end', onEnd);
      res.on('error', onError);
      res.on('close', onClose);
    });
  }

  drain(): Promise<void> {
    const res = this.res;
    return new Promise((resolve, reject) => {
      if (this.failure !== undefined) return reject(this.failure);
      if (res.complete && res.readableEnded) return resolve();
      res.once('end', () => {
        this.ended = true;
        resolve();
      });
      res.once('close', () => (this.ended ? undefined : reject(this.failure ?? new Error('connection closed before the end of the body'))));
      res.resume();
    });
  }
}
