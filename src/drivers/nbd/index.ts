import type * as z from 'zod';
import { BlockError } from '../../errors.js';
import { NBD_DEFAULT_MAX_PAYLOAD, NbdClient } from './client.js';
import {
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  allocationStatus,
} from './protocol.js';
import { nbdFacts } from './facts.js';
import { DEFAULT_PSK_USERNAME, loadClientPskFile, loadQemuTlsClientCredsDir, type NbdClientTls } from './tls.js';
import { parseOptions } from '../../options/zod-error.js';
import { type BlockStatus, type DriverInstance, defineDriver } from '../../node/driver.js';

const schema = nbdFacts.schema();

/** Largest TRIM / WRITE_ZEROES / BLOCK_STATUS length sent in one request (the field is 32 bits). */
const MAX_U32 = 0xffffffff;

/**
 * A remote NBD export (QEMU block/nbd.c): one connection, many requests in flight; with
 * `reconnectDelay`, requests survive a lost connection that comes back within that many seconds.
 */
export const nbdDriver = defineDriver({
  name: nbdFacts.name,
  capabilities: nbdFacts.capabilities,
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
