// The http driver's transport in the browser build: the global fetch is the only one.
import { BlockError } from '../../errors.js';
import { FetchTransport } from './fetch-transport.js';
import type { HttpTransport, HttpTransportKind } from './transport.js';

export const DEFAULT_HTTP_TRANSPORT: HttpTransportKind = 'fetch';

export async function createHttpTransport(kind: HttpTransportKind, _sockets: number): Promise<HttpTransport> {
  if (kind === 'node') throw new BlockError('ENOTSUP', "transport 'node' needs Node's http module: a browser has only fetch", { field: 'transport' });
  return new FetchTransport();
}
