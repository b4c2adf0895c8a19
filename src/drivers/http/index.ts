import { BlockError } from '../../errors.js';
import { type BlockStatus, type DriverInstance, defineDriver } from '../../node/driver.js';
import { createHttpTransport } from './default-transport.js';
import { httpFacts } from './facts.js';
import { HttpRangeClient, credentialsToHeader, displayUrl } from './client.js';
import { READAHEAD_SLOTS, ReadaheadReader } from './readahead.js';

/** Largest single request: the timeout covers a whole request, so huge reads are split. */
const MAX_TRANSFER = 8 * 1024 * 1024;
/**
 * Connections a node:http transport keeps to the server: every read-ahead window in flight plus
 * the caller's own reads (convert keeps 8 windows, qcow2 splits them by cluster). Requests past
 * that wait for a free connection, their timeout running.
 */
export const HTTP_SOCKETS = READAHEAD_SLOTS + 24;

export { HTTP_DEFAULT_READAHEAD, HTTP_DEFAULT_TIMEOUT, isHttpUrl } from './facts.js';

/**
 * A read-only remote file over HTTP(S) with byte ranges (QEMU block/curl.c): node:http in Node,
 * the global fetch in browsers (or in Node with `transport: 'fetch'`), the same range logic above both.
 */
export const httpDriver = defineDriver({
  name: httpFacts.name,
  capabilities: httpFacts.capabilities,
  schema: httpFacts.schema(),
  async open({ options, nodeName, clock }): Promise<DriverInstance> {
    if (!options.sslverify) {
      // Both transports must behave alike, and fetch has no per-request TLS settings (browsers none at
      // all; Node's would need undici's Agent as `dispatcher`): ignoring the option would verify anyway or, worse, pretend not to.
      throw new BlockError('ENOTSUP', 'sslverify: false is not supported: certificates are always verified (use a trusted CA, e.g. NODE_EXTRA_CA_CERTS in Node)', {
        node: nodeName,
        field: 'sslverify',
      });
    }
    const headers: Record<string, string> = { ...options.headers };
    if (options.cookie !== undefined) headers.Cookie = options.cookie;
    const url = credentialsToHeader(options.url, headers);
    const client = new HttpRangeClient({
      url,
      transport: await createHttpTransport(options.transport, HTTP_SOCKETS),
      headers,
      timeoutMs: options.timeout * 1000,
      retries: options.retries,
      retryDelayMs: options.retryDelay,
      node: nodeName,
      clock,
    });
    await client.open();
    const size = client.size;
    const readahead = options.readahead;
    const reader = new ReadaheadReader((offset, buffer) => client.read(offset, buffer), size, readahead);

    return {
      alignment: 1,
      maxTransfer: MAX_TRANSFER,
      length: () => size,
      read: (offset, buffer) => reader.read(offset, buffer),
      write: (offset) => Promise.reject(new BlockError('EROFS', `http: ${displayUrl(url)} is read-only`, { node: nodeName, offset })),
      flush: () => Promise.resolve(),
      discard: () => Promise.resolve(),
      async blockStatus(offset, length): Promise<BlockStatus> {
        return { offset, length, data: true, zero: false, allocated: true, depth: 0, hostOffset: offset };
      },
      close: async () => {
        client.close();
        reader.clear();
      },
      info: () => ({
        url: displayUrl(url),
        readahead,
        timeout: options.timeout,
        retries: options.retries,
        transport: options.transport,
        ...(client.validators.etag !== undefined ? { etag: client.validators.etag } : {}),
        ...(client.validators.lastModified !== undefined ? { lastModified: client.validators.lastModified } : {}),
        requests: client.requests,
      }),
    };
  },
});
