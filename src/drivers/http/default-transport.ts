// The http driver's transport in Node: node:http by default (several times cheaper per byte than
// the global fetch), fetch when asked for. The browser build swaps in default-transport.browser.ts.
import { FetchTransport } from './fetch-transport.js';
import type { HttpTransport, HttpTransportKind } from './transport.js';

/** The transport used when none is asked for. */
export const DEFAULT_HTTP_TRANSPORT: HttpTransportKind = 'node';

/**
 * A transport of the given kind; `sockets` bounds the connections a node transport keeps per
 * origin. The node transport (node:https, node:net) loads on first use: a program or a CLI verb
 * that opens no http node does not pay for those modules at start-up.
 */
export async function createHttpTransport(kind: HttpTransportKind, sockets: number): Promise<HttpTransport> {
  if (kind === 'fetch') return new FetchTransport();
  const { NodeTransport } = await import('./node-transport.js');
  return new NodeTransport(sockets);
}
