// What the nbd driver is before its module loads (the built-in stub's facts, and the driver's own).
import * as z from 'zod';
import { builtOnce } from '../../node/lazy-driver.js';
import { NBD_MAX_STRING_SIZE } from './constants.js';

const port = () =>
  z.union([
    z.number().int().min(1).max(65535),
    z
      .string()
      .regex(/^\d{1,5}$/, 'must be a port number')
      .transform(Number)
      .refine((n) => n >= 1 && n <= 65535, 'must be 1..65535'),
  ]);

/** A number of seconds as QEMU takes it (a uint32), also as a decimal string (-drive spelling). */
const seconds = () =>
  z.union([
    z.number().int('must be a whole number of seconds').min(0).max(0xffffffff),
    z
      .string()
      .regex(/^\d{1,10}$/, 'must be a whole number of seconds')
      .transform(Number)
      .refine((n) => n <= 0xffffffff, 'must fit in 32 bits'),
  ]);

const pem = () => z.string().min(1, 'must not be empty');

export const nbdFacts = {
  name: 'nbd',
  capabilities: { kind: 'protocol' },
  schema: builtOnce(() =>
    z
      .object({
        /** Where the NBD server listens (QEMU's SocketAddress: inet host/port or a unix socket path). */
        server: z.discriminatedUnion('type', [
          z
            .object({
              /** A TCP address. */
              type: z.literal('inet'),
              /** Host name or IP address of the server. */
              host: z.string().min(1, 'must not be empty'),
              /** TCP port (a number or a decimal string). */
              port: port(),
            })
            .strict(),
          z
            .object({
              /** A unix socket. */
              type: z.literal('unix'),
              /** Path of the server's socket. */
              path: z
                .string()
                .min(1, 'must not be empty')
                .refine((p) => !p.includes('\0'), 'must not contain a NUL byte'),
            })
            .strict(),
        ]),
        /** Export name ('' or absent: the server's default export). */
        export: z
          .string()
          .refine((s) => Buffer.byteLength(s) <= NBD_MAX_STRING_SIZE, `must be at most ${NBD_MAX_STRING_SIZE} bytes`)
          .default(''),
        /**
         * TLS (QEMU's tls-creds): x509 with a tls-creds-x509 client `dir` (ca-cert.pem, optional
         * client-cert.pem + client-key.pem) or PEM text; psk with a tls-creds-psk `dir` or a keys.psk
         * `file` and a `username` (default qemu), or the key as hex. No plain-text fallback.
         */
        tls: z
          .discriminatedUnion('mode', [
            z
              .object({
                /** Certificates (QEMU tls-creds-x509). */
                mode: z.literal('x509'),
                /** Directory with ca-cert.pem and optionally client-cert.pem + client-key.pem. */
                dir: z.string().min(1).optional(),
                /** CA certificate(s) as PEM text. */
                ca: pem().optional(),
                /** Client certificate as PEM text. */
                cert: pem().optional(),
                /** Client private key as PEM text. */
                key: pem().optional(),
              })
              .strict(),
            z
              .object({
                /** A pre-shared key (QEMU tls-creds-psk). */
                mode: z.literal('psk'),
                /** Directory with keys.psk. */
                dir: z.string().min(1).optional(),
                /** A keys.psk file (`username:hexkey` lines). */
                file: z.string().min(1).optional(),
                /** PSK identity (default `qemu`). */
                username: z.string().min(1).optional(),
                /** The key itself, as hex digits. */
                key: z
                  .string()
                  .regex(/^([0-9a-fA-F]{2})+$/, 'must be hex digits')
                  .optional(),
              })
              .strict()
              .refine((o) => [o.dir, o.file, o.key].filter((x) => x !== undefined).length === 1, 'psk needs one of dir, file or key'),
          ])
          .optional(),
        /** The name the server certificate must carry (QEMU's tls-hostname; default: the inet host). */
        tlsHostname: z.string().min(1).optional(),
        /** Seconds requests wait for a lost connection to be re-established before failing with EIO (QEMU reconnect-delay; 0: fail at once). */
        reconnectDelay: seconds().default(0),
        /** Seconds to keep retrying the first connection (QEMU open-timeout; 0: one attempt). */
        openTimeout: seconds().default(0),
        /**
         * QEMU's x-dirty-bitmap: block status reports this metadata context (`qemu:dirty-bitmap:NAME`,
         * `qemu:allocation-depth`) instead of base:allocation, read as QEMU's client reads it: a dirty
         * (or locally allocated) range shows as no data, a clean one as data.
         */
        xDirtyBitmap: z
          .string()
          .min(1, 'must not be empty')
          .refine((s) => Buffer.byteLength(s) <= NBD_MAX_STRING_SIZE, `must be at most ${NBD_MAX_STRING_SIZE} bytes`)
          .optional(),
      })
      .strict(),
  ),
} as const;
