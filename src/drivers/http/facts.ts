// What the http driver is before its module loads (the built-in stub's facts, and the driver's own).
import * as z from 'zod';
import { builtOnce } from '../../node/lazy-driver.js';
import { sizeSchema } from '../../options/size.js';
import { DEFAULT_HTTP_TRANSPORT } from './default-transport.js';

/** QEMU's curl defaults: 256 KiB read-ahead, 5 s per request. */
export const HTTP_DEFAULT_READAHEAD = 256 * 1024;
export const HTTP_DEFAULT_TIMEOUT = 5;

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

export const httpFacts = {
  name: 'http',
  capabilities: { kind: 'protocol', readOnly: true },
  schema: builtOnce(() =>
    z
      .object({
        /** The file: an http: or https: URL (user:password@ in it becomes Basic authentication). */
        url: z.string().refine(isHttpUrl, 'must be an absolute http:// or https:// URL'),
        /** Reads shorter than this are extended to it; the extra bytes serve the next reads. 0: no read-ahead. */
        readahead: sizeSchema().default(HTTP_DEFAULT_READAHEAD),
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
      .strict(),
  ),
} as const;
