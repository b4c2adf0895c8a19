/**
 * The http driver's transport in Node: node:http / node:https with a keep-alive agent per client,
 * Nagle off, and body chunks copied straight into the caller's buffer (the global fetch goes
 * through web streams and costs several times more CPU per byte). Never part of the browser build:
 * only src/platform/http-transport.ts imports it.
 */
import http from 'node:http';
import https from 'node:https';
import type { HeaderLookup, HttpAnswer, HttpMethod, HttpTransport } from './transport.js';

/** Redirects followed per request before giving up, as fetch does. */
const MAX_REDIRECTS = 20;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Headers not carried to another origin by a redirect (what fetch drops too). */
const ORIGIN_BOUND = ['authorization', 'proxy-authorization', 'cookie'];

export class NodeTransport implements HttpTransport {
  readonly kind = 'node';
  private readonly agentOptions: http.AgentOptions & { noDelay: boolean };
  private httpAgent: http.Agent | undefined;
  private httpsAgent: https.Agent | undefined;
  /** The last URL parsed, and its request options: every request of a client names the same file. */
  private lastUrl = '';
  private lastTarget: Target | undefined;

  /** `sockets`: connections kept per origin, in use or idle (reads in flight plus read-ahead). */
  constructor(sockets: number) {
    this.agentOptions = { keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets, scheduling: 'lifo', noDelay: true };
  }

  async request(url: string, method: HttpMethod, headers: Readonly<Record<string, string>>, signal: AbortSignal): Promise<HttpAnswer> {
    let target = this.target(url);
    let sent = headers;
    for (let hops = 0; ; hops++) {
      const res = await this.once(target, method, sent, signal);
      const location = res.headers.location;
      if (!REDIRECTS.has(res.statusCode ?? 0) || location === undefined) return new NodeAnswer(res);
      // Redirect bodies are small: read them so the connection goes back to the pool.
      res.resume();
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

  private agent(https_: boolean): http.Agent {
    if (https_) {
      this.httpsAgent ??= new https.Agent(this.agentOptions);
      return this.httpsAgent;
    }
    this.httpAgent ??= new http.Agent(this.agentOptions);
    return this.httpAgent;
  }

  private once(target: Target, method: HttpMethod, headers: Readonly<Record<string, string>>, signal: AbortSignal): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const lib = target.https ? https : http;
      const req = lib.request(
        {
          protocol: target.https ? 'https:' : 'http:',
          hostname: target.hostname,
          port: target.port,
          path: target.path,
          method,
          headers,
          agent: this.agent(target.https),
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
    this.httpAgent?.destroy();
    this.httpsAgent?.destroy();
  }
}

interface Target {
  href: string;
  https: boolean;
  hostname: string;
  port: string;
  path: string;
}

function toTarget(u: URL): Target {
  // URL keeps IPv6 literals bracketed; the socket wants them bare.
  const hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  return { href: u.href, https: u.protocol === 'https:', hostname, port: u.port, path: `${u.pathname}${u.search}` };
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
