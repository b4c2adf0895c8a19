import { RealClock } from '../../clock.js';
import { HttpRangeClient, credentialsToHeader } from './client.js';
import { DEFAULT_HTTP_TRANSPORT, createHttpTransport } from './default-transport.js';
import { HTTP_DEFAULT_TIMEOUT, HTTP_SOCKETS } from './index.js';

const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** The format of a remote image by its first 4 bytes (qcow2 magic, else raw), read with one range request. */
export async function probeHttpFormat(url: string): Promise<'qcow2' | 'raw'> {
  const headers: Record<string, string> = {};
  const client = new HttpRangeClient({ url: credentialsToHeader(url, headers), headers, timeoutMs: HTTP_DEFAULT_TIMEOUT * 1000,
    retries: 3,
    retryDelayMs: 200,
    clock: new RealClock(),
    transport: createHttpTransport(DEFAULT_HTTP_TRANSPORT, HTTP_SOCKETS),
  });
  try {
    await client.open();
    if (client.size < 4) return 'raw';
    const head = new Uint8Array(4);
    await client.read(0, head);
    return head.every((b, i) => b === QCOW2_MAGIC[i]) ? 'qcow2' : 'raw';
  } finally {
    client.close();
  }
}
