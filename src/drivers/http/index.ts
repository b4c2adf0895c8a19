import * as z from 'zod';
import { BlockError } from '../../errors.js';
import { type BlockStatus, type DriverInstance, defineDriver } from '../../node/driver.js';
import { sizeSchema } from '../../options/size.js';
import { DEFAULT_HTTP_TRANSPORT, createHttpTransport } from './default-transport.js';
import { HttpRangeClient, credentialsToHeader, displayUrl } from './client.js';
import { READAHEAD_SLOTS, ReadaheadReader } from './readahead.js';

/** QEMU's curl defaults: 256 KiB read-ahead, 5 s per request. */
export const HTTP_DEFAULT_READAHEAD = 256 * 1024;
export const HTTP_DEFAULT_TIMEOUT = 5;
/** Largest single request: the timeout covers a whole request, so huge reads are split. */
const MAX_TRANSFER = 8 * 1024 * 1024;
/**
 * Connections a node:http transport keeps to the server: every read-ahead window in flight plus
 * the caller's own reads (convert keeps 8 windows, qcow2 splits them by cluster). Requests past
 * that wait for a free connection, their timeout running.
 */
export const HTTP_SOCKETS = READAHEAD_SLOTS + 24;

/** True for an absolute http: or https: URL. */
export function isHttpUrl(s: string): boolean {
  if (!/^https?:\/\//i.test(s)) return false;
  try {
    new URL(s);
    return true;
  } catch {
    return false;
  }
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const schema = z
  .object({
    /** The file: an http: or https: URL (user:password@ in it becomes Basic authentication). */
    url: z.string().refine(isHttpUrl, 'must be an absolute http:// or https:// URL'),
    /** Reads shorter than this are extended to it; the extra bytes serve the next reads. 0: no read-ahead. */
    readahead: sizeSchema.default(HTTP_DEFAULT_READAHEAD),
    /** Seconds one request (headers and body) may take before it is abandoned and retried. */
    timeout: z.number().positive('must be a positive number of seconds').max(86400).default(HTTP_DEFAULT_TIMEOUT),
    /** Extra request headers (Authorization, …). */
    headers: z
      .record(
        z.string().regex(HEADER_NAME, 'must be a header name (token characters)'),
        z.string().refine((v) => !/[\r\n\0]/.test(v), 'must not contain CR, LF or NUL'),
      )
      .default({}),
    /** Cookie header value, as QEMU's curl `cookie` option (`name=value; other=value`). */
    cookie: z
      .string()
      .refine((v) => !/[\r\n\0]/.test(v), 'must not contain CR, LF or NUL')
      .optional(),
    /** Further attempts after a 5xx, 408, 429, network error, timeout or short body. */
    retries: z.number().int().min(0).max(20).default(3),
    /** Milliseconds before the first retry; each further one waits twice as long (capped at 10 s). */
    retryDelay: z.number().nonnegative().max(60_000).default(200),
    /** Verify the https server's certificate (QEMU sslverify). Only true is possible (fetch cannot turn it off). */
    sslverify: z.boolean().default(true),
    /**
     * What sends the requests: `node` (node:http/https with kept-alive connections, the default in
     * Node) or `fetch` (the global fetch: the only one in browsers). Both behave the same; node is faster.
     */
    transport: z.enum(['node', 'fetch']).default(DEFAULT_HTTP_TRANSPORT),
  })
  .strict();

/**
 * A read-only remote file over HTTP(S) with byte ranges (QEMU block/curl.c): node:http in Node,
 * the global fetch in browsers (or in Node with `transport: 'fetch'`), the same range logic above both.
 */
export const httpDriver = defineDriver({
  name: 'http',
  capabilities: { kind: 'protocol', readOnly: true },
  schema,
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
