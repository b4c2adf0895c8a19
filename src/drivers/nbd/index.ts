import * as z from 'zod';
import { BlockError } from '../../errors.js';
import { NBD_DEFAULT_MAX_PAYLOAD, NbdClient } from './client.js';
import {
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAX_STRING_SIZE,
  allocationStatus,
} from './protocol.js';
import { DEFAULT_PSK_USERNAME, loadClientPskFile, loadQemuTlsClientCredsDir, type NbdClientTls } from './tls.js';
import { parseOptions } from '../../options/zod-error.js';
import { type BlockStatus, type DriverInstance, defineDriver } from '../../node/driver.js';

const port = z.union([
  z.number().int().min(1).max(65535),
  z
    .string()
    .regex(/^\d{1,5}$/, 'must be a port number')
    .transform(Number)
    .refine((n) => n >= 1 && n <= 65535, 'must be 1..65535'),
]);

/** A number of seconds as QEMU takes it (a uint32), also as a decimal string (-drive spelling). */
const seconds = z.union([
  z.number().int('must be a whole number of seconds').min(0).max(0xffffffff),
  z
    .string()
    .regex(/^\d{1,10}$/, 'must be a whole number of seconds')
    .transform(Number)
    .refine((n) => n <= 0xffffffff, 'must fit in 32 bits'),
]);

const pem = z.string().min(1, 'must not be empty');

const schema = z
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
          port,
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
            ca: pem.optional(),
            /** Client certificate as PEM text. */
            cert: pem.optional(),
            /** Client private key as PEM text. */
            key: pem.optional(),
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
    reconnectDelay: seconds.default(0),
    /** Seconds to keep retrying the first connection (QEMU open-timeout; 0: one attempt). */
    openTimeout: seconds.default(0),
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
  .strict();

/** Largest TRIM / WRITE_ZEROES / BLOCK_STATUS length sent in one request (the field is 32 bits). */
const MAX_U32 = 0xffffffff;

/**
 * A remote NBD export (QEMU block/nbd.c): one connection, many requests in flight; with
 * `reconnectDelay`, requests survive a lost connection that comes back within that many seconds.
 */
export const nbdDriver = defineDriver({
  name: 'nbd',
  capabilities: { kind: 'protocol' },
  schema,
  async open({ options, readOnly, nodeName }): Promise<DriverInstance> {
    const exportName = options.export;
    const tls = options.tls === undefined ? undefined : await loadClientTls(options.tls);
    const client = await NbdClient.connect({
      ...(tls ? { tls } : {}),
      ...(options.tlsHostname !== undefined ? { tlsHostname: options.tlsHostname } : {}),
      server: options.server,
      exportName,
      node: nodeName,
      reconnectDelay: options.reconnectDelay,
      openTimeout: options.openTimeout,
      needWrite: !readOnly,
      ...(options.xDirtyBitmap !== undefined ? { metaContext: options.xDirtyBitmap } : {}),
    });
    // QEMU's client reads allocation depths above 2 as 2: only the low two bits mean anything to it.
    const depthContext = options.xDirtyBitmap === 'qemu:allocation-depth';
    const otherContext = options.xDirtyBitmap !== undefined;
    const { info } = client;
    if (!readOnly && info.flags & NBD_FLAG_READ_ONLY) {
      await client.close();
      throw new BlockError('EROFS', `NBD export '${exportName}' is read-only; open it with readOnly: true`, { node: nodeName, field: 'export' });
    }
    const alignment = info.minimum;
    // A request is at most the server's maximum (capped at the spec's default payload), a multiple of the alignment.
    const maxTransfer = Math.max(alignment, Math.floor(Math.min(info.maximum, NBD_DEFAULT_MAX_PAYLOAD) / alignment) * alignment);
    const maxLength = Math.floor(MAX_U32 / alignment) * alignment;
    /** Sends a length-only command in pieces the 32-bit length field can hold. */
    const split = async (op: (o: number, l: number) => Promise<void>, offset: number, length: number) => {
      for (let pos = 0; pos < length; pos += maxLength) await op(offset + pos, Math.min(maxLength, length - pos));
    };
    const instance: DriverInstance = {
      alignment,
      maxTransfer,
      length: () => info.size,
      read: (offset, buffer) => client.read(offset, buffer),
      write: (offset, data) => client.write(offset, data),
      flush: () => (info.flags & NBD_FLAG_SEND_FLUSH ? client.flush() : Promise.resolve()),
      discard: (offset, length) =>
        info.flags & NBD_FLAG_SEND_TRIM ? split((o, l) => client.trim(o, l), offset, length) : Promise.resolve(),
      async blockStatus(offset, length): Promise<BlockStatus> {
        const base = { offset, allocated: true, depth: 0, hostOffset: offset };
        if (info.allocationContext === undefined) return { ...base, length, data: true, zero: false };
        const want = Math.min(length, maxLength);
        const e = await client.blockStatus(offset, want);
        if (e.length === 0) throw new BlockError('EIO', `NBD BLOCK_STATUS at ${offset}: empty extent`, { node: nodeName, offset });
        if (!otherContext) return { ...base, length: Math.min(e.length, want), ...allocationStatus(e.flags) };
        // Another context read through base:allocation's bits, as QEMU does: flag 1 (dirty) is a "hole".
        const status = allocationStatus(depthContext && e.flags > 2 ? 2 : e.flags);
        const allocated = status.data || status.zero;
        return { offset, length: Math.min(e.length, want), ...status, allocated, depth: 0, ...(allocated ? { hostOffset: offset } : {}) };
      },
      close: () => client.close(),
      info: () => ({
        server: options.server.type === 'inet' ? `${options.server.host}:${options.server.port}` : options.server.path,
        export: exportName,
        minimumBlockSize: info.minimum,
        preferredBlockSize: info.preferred,
        maximumBlockSize: info.maximum,
        structuredReplies: info.structured,
        baseAllocation: info.allocationContext !== undefined && !otherContext,
        ...(otherContext ? { xDirtyBitmap: options.xDirtyBitmap } : {}),
        tls: options.tls?.mode ?? 'none',
        reconnectDelay: options.reconnectDelay,
      }),
    };
    if (info.flags & NBD_FLAG_SEND_WRITE_ZEROES) instance.writeZeroes = (offset, length) => split((o, l) => client.writeZeroes(o, l), offset, length);
    return instance;
  },
});

type TlsOption = NonNullable<z.infer<typeof schema>['tls']>;

/** The driver's options once checked (for callers that talk to an export without a node, e.g. format probing). */
export type NbdDriverOptions = z.infer<typeof schema>;

/** Checks `nbd` driver options (without driver and readOnly) as openDrive would: BlockError EINVAL naming the field. */
export function parseNbdDriverOptions(options: unknown): NbdDriverOptions {
  return parseOptions(schema, options);
}

/** Turns the tls option into credentials, reading QEMU-style credential files. */
export async function loadClientTls(o: TlsOption): Promise<NbdClientTls> {
  if (o.mode === 'psk') {
    if (o.dir !== undefined) return loadQemuTlsClientCredsDir(o.dir, 'psk', { ...(o.username !== undefined ? { username: o.username } : {}) });
    if (o.file !== undefined) return loadClientPskFile(o.file, o.username);
    return { mode: 'psk', username: o.username ?? DEFAULT_PSK_USERNAME, key: Buffer.from(o.key as string, 'hex') };
  }
  const fromDir = o.dir === undefined ? { mode: 'x509' as const } : await loadQemuTlsClientCredsDir(o.dir, 'x509');
  return {
    ...fromDir,
    ...(o.ca !== undefined ? { ca: o.ca } : {}),
    ...(o.cert !== undefined ? { cert: o.cert } : {}),
    ...(o.key !== undefined ? { key: o.key } : {}),
  } as NbdClientTls;
}
