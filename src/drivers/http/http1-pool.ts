/**
 * Kept-alive HTTP/1.1 connections (http1.ts) per origin, and the request head they send. Node only,
 * like http1.ts: part of the node transport.
 */
import { Http1Connection } from './http1.js';
import type { HttpAnswer } from './transport.js';

/** Parts of a URL a connection and its requests need. */
export interface Http1Target {
  hostname: string;
  port: number;
  /** Host header value: host and, when not the default, port. */
  host: string;
  /** Path and query. */
  path: string;
}

/**
 * Kept-alive {@link Http1Connection}s per origin: a request takes an idle one (most recently used
 * first) or opens another (no cap, as fetch), and at most `keepIdle` stay open idle per origin.
 */
export class Http1Pool {
  private readonly idle = new Map<string, Http1Connection[]>();
  private readonly open = new Set<Http1Connection>();
  private readonly released = (c: Http1Connection) => this.release(c);
  private readonly dropped = (c: Http1Connection) => this.drop(c);

  constructor(private readonly keepIdle: number) {}

  async request(target: Http1Target, method: 'GET' | 'HEAD', headers: Readonly<Record<string, string>>, signal: AbortSignal): Promise<HttpAnswer> {
    const head = requestHead(method, target, headers);
    const key = `${target.hostname}:${target.port}`;
    const reused = this.idle.get(key)?.pop();
    if (reused !== undefined) {
      reused.ref();
      try {
        return await reused.send(method, head, signal);
      } catch (e) {
        // The server closed the idle connection as it was reused: nothing was asked of it, try a fresh one.
        if (signal.aborted || reused.received) throw e;
      }
    }
    const c = new Http1Connection(target.hostname, target.port, this.released, this.dropped);
    c.key = key;
    this.open.add(c);
    return c.send(method, head, signal);
  }

  private release(c: Http1Connection): void {
    let list = this.idle.get(c.key);
    if (list === undefined) {
      list = [];
      this.idle.set(c.key, list);
    }
    if (list.length >= this.keepIdle) {
      c.destroy();
      return;
    }
    c.unref();
    list.push(c);
  }

  private drop(c: Http1Connection): void {
    this.open.delete(c);
    const list = this.idle.get(c.key);
    const i = list === undefined ? -1 : list.indexOf(c);
    if (i >= 0) list?.splice(i, 1);
  }

  /** Ends every connection (the transport closes). */
  close(): void {
    for (const c of [...this.open]) c.destroy();
    this.idle.clear();
  }
}

/** The request head: request line, Host, the caller's headers (checked: no CR, LF, NUL or non-Latin-1 character). */
function requestHead(method: string, target: Http1Target, headers: Readonly<Record<string, string>>): string {
  let hasHost = false;
  let lines = '';
  for (const name in headers) {
    const value = headers[name];
    if (/[^\t\x20-\x7e\x80-\xff]/.test(value)) throw new Error(`header ${name}: invalid character in its value`);
    if (name.toLowerCase() === 'host') hasHost = true;
    lines += `${name}: ${value}\r\n`;
  }
  return `${method} ${target.path} HTTP/1.1\r\n${hasHost ? '' : `host: ${target.host}\r\n`}${lines}\r\n`;
}
