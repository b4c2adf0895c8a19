// The http driver's transport in Node: node:http by default (several times cheaper per byte than
// the global fetch), fetch when asked for. The browser build swaps in default-transport.browser.ts.
import { FetchTransport } from './fetch-transport.js';
import { NodeTransport } from './node-transport.js';
import type { HttpTransport, HttpTransportKind } from './transport.js';

/** The transport used when none is asked for. */
export const DEFAULT_HTTP_TRANSPORT: HttpTransportKind = 'node';

/** A transport of the given kind; `sockets` bounds the connections a node transport keeps per origin. */
export function createHttpTransport(kind: HttpTransportKind, sockets: number): HttpTransport {
  return kind === 'fetch' ? new FetchTransport() : new NodeTransport(sockets);
}
