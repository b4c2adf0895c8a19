/**
 * How the http client sends one request: the seam between the range logic (client.ts, the same
 * everywhere) and the wire (fetch in browsers, node:http in Node; see src/drivers/http/default-transport.ts).
 */

/** Response headers by name (case-insensitive), null when absent; the global Headers fits. */
export interface HeaderLookup {
  get(name: string): string | null;
}

/** One answer whose headers have arrived; its body is read at most once, by readInto or drain. */
export interface HttpAnswer {
  readonly status: number;
  readonly statusText: string;
  readonly headers: HeaderLookup;
  /**
   * Copies the body into `buffer` from its start and resolves with the body's length once it has
   * ended; a body longer than `buffer` resolves early with a count past `buffer.length` (the rest
   * is not read). Rejects when the transfer fails (reset, cut, aborted).
   */
  readInto(buffer: Uint8Array): Promise<number>;
  /** Reads the (small) body to its end and drops it. */
  drain(): Promise<void>;
}

export type HttpMethod = 'GET' | 'HEAD';

/** Sends requests; redirects are followed. Failures of the network reject with a plain Error. */
export interface HttpTransport {
  /** Which implementation this is (shown in the node's info). */
  readonly kind: HttpTransportKind;
  /** Sends one request; `signal` aborts it, the body transfer included. */
  request(url: string, method: HttpMethod, headers: Readonly<Record<string, string>>, signal: AbortSignal): Promise<HttpAnswer>;
  /** Lets go of pooled connections; requests still in flight must have been aborted. */
  close(): void;
}

/** `fetch`: the global fetch (browsers, and Node on request); `node`: node:http / node:https. */
export type HttpTransportKind = 'fetch' | 'node';
