import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, NbdServer } from '../../src/index.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { RawNbdClient } from '../helpers/nbd-raw-client.js';

describe('NBD error texts show a request offset as the client sent it (not clamped to 2^53-1)', () => {
  const layer = new BlockLayer();
  let server: NbdServer;
  let port: number;
  beforeAll(async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: 1 << 20 });
    server = new NbdServer({ exports: [{ name: 'd', drive }] });
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    port = a.port;
  });
  afterAll(async () => {
    await server.close();
    await layer.close();
  });

  it.each([2n ** 63n, 2n ** 63n + 12345n, 2n ** 64n - 1n, 2n ** 53n + 1n])('a READ at %s is refused with EINVAL naming that offset', async (offset) => {
    const c = await RawNbdClient.connect(port);
    await c.structuredGo('d');
    const h = P.encodeRequest({ flags: 0, type: P.NBD_CMD_READ, cookie: 7n, offset: 0, length: 512 });
    h.writeBigUInt64BE(offset, 16);
    c.write(h);
    const [err] = await c.structuredReply();
    expect(err).toMatchObject({ type: P.NBD_REPLY_TYPE_ERROR, cookie: 7n });
    expect(err?.payload.readUInt32BE(0)).toBe(P.NBD_EINVAL);
    const message = err?.payload.subarray(6).toString();
    expect(message).toBe(`offset ${offset} + length 512 beyond the export size ${1 << 20}`);
    expect(message).not.toContain(String(Number.MAX_SAFE_INTEGER));
    c.destroy();
  });
});
