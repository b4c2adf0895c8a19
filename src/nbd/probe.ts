import { loadClientTls, parseNbdDriverOptions } from '../drivers/nbd/index.js';
import { QCOW2_MAGIC } from '../drivers/qcow2/limits.js';
import { NbdClient } from '../drivers/nbd/client.js';

/**
 * Tells qcow2 from raw for an NBD export by its first bytes, as qemu-img probes: one short-lived
 * connection (TLS as the options say) reads the start of the export and closes.
 */
export async function probeNbdFormat(options: Record<string, unknown>): Promise<'qcow2' | 'raw'> {
  const { driver: _driver, readOnly: _readOnly, ...own } = options;
  const o = parseNbdDriverOptions(own);
  const tls = o.tls === undefined ? undefined : await loadClientTls(o.tls);
  const client = await NbdClient.connect({
    server: o.server,
    exportName: o.export,
    node: 'probe',
    ...(tls ? { tls } : {}),
    ...(o.tlsHostname !== undefined ? { tlsHostname: o.tlsHostname } : {}),
    openTimeout: o.openTimeout,
  });
  try {
    // One block of the export's minimum size (a server may refuse smaller reads), at least the magic.
    const length = Math.min(client.info.size, Math.max(4, client.info.minimum));
    if (length < 4) return 'raw';
    const head = Buffer.alloc(length);
    await client.read(0, head);
    return head.readUInt32BE(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
  } finally {
    await client.close();
  }
}
