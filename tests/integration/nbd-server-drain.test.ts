import { describe, expect, it } from 'vitest';
import { BlockLayer, VirtualClock } from '../../src/index.js';
import { NbdServer } from '../../src/nbd/server.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { RawNbdClient } from '../helpers/nbd-raw-client.js';

const KiB = 1024;
const WRITES = 6;

/** Resolves with `value`, or with 'timeout' after `ms` of real time. */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)))]).finally(() => clearTimeout(timer));
}

/**
 * A server on a virtual clock (it never advances: only draining can let the queue go) serving a
 * drive limited to 1 byte/s over a memory node the test keeps open; a client whose six 4 KiB
 * writes were sent: the first went (the bucket starts empty), five are queued by the limit.
 */
async function queuedWrites() {
  const clock = new VirtualClock();
  const layer = new BlockLayer({ clock });
  const mem = await layer.openNode({ driver: 'memory', size: '1M' });
  const drive = await layer.openDrive({ id: 'slow', driver: 'raw', file: mem, throttle: { bpsWrite: 1 } });
  const server = new NbdServer({ clock, exports: [{ name: 'slow', drive }] });
  const { port } = (await server.listen({ port: 0 })) as { port: number };
  const client = await RawNbdClient.connect(port);
  await client.handshake('slow');
  for (let i = 0; i < WRITES; i++) client.request(P.NBD_CMD_WRITE, i * 4 * KiB, 4 * KiB, BigInt(i + 1), 0, new Uint8Array(4 * KiB).fill(i + 1));
  const first = await client.simpleReply();
  expect(first).toMatchObject({ error: 0, cookie: 1n });
  for (let i = 0; i < 200 && drive.stats().throttle?.queuedWrites !== WRITES - 1; i++) await new Promise((r) => setTimeout(r, 5));
  expect(drive.stats().throttle?.queuedWrites).toBe(WRITES - 1);
  return { clock, layer, mem, drive, server, client };
}

/** The replies to the queued writes: all successful, one per cookie; then the data in the node. */
async function expectAcknowledgedAndWritten(client: RawNbdClient, mem: { read(o: number, b: Uint8Array): Promise<void> }): Promise<void> {
  const cookies: bigint[] = [];
  for (let i = 1; i < WRITES; i++) {
    const r = await client.simpleReply();
    expect(r.error).toBe(0);
    cookies.push(r.cookie);
  }
  expect(cookies.sort()).toEqual([2n, 3n, 4n, 5n, 6n]);
  for (let i = 0; i < WRITES; i++) {
    const b = new Uint8Array(4 * KiB);
    await mem.read(i * 4 * KiB, b);
    expect(b.every((x) => x === i + 1)).toBe(true);
  }
}

describe('NbdServer: closing and removing an export do not wait for the limits', () => {
  it('close() with writes queued at 1 byte/s: the queue goes now, every write is acknowledged and written, the client is disconnected', async () => {
    const { clock, layer, mem, drive, server, client } = await queuedWrites();
    expect(await within(server.close(), 3000)).toBeUndefined();
    expect(clock.now()).toBe(0);
    await expectAcknowledgedAndWritten(client, mem);
    expect(await within(client.closed, 3000)).toBeUndefined();
    // The lift ended with the close: the drive (still open, its owner's) is throttled again.
    let done = false;
    const later = drive.write(0, new Uint8Array(4 * KiB)).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    expect(drive.stats().throttle?.queuedWrites).toBe(1);
    await drive.close();
    await later;
    await mem.unref();
    await layer.close();
  });

  it('removeExport() with writes queued at 1 byte/s completes now: every write acknowledged and written, the client disconnected, the server still serving', async () => {
    const { clock, layer, mem, drive, server, client } = await queuedWrites();
    server.addExport({ name: 'other', drive });
    expect(await within(server.removeExport('slow'), 3000)).toBeUndefined();
    expect(clock.now()).toBe(0);
    await expectAcknowledgedAndWritten(client, mem);
    expect(await within(client.closed, 3000)).toBeUndefined();
    expect(server.exportNames).toEqual(['other']);
    expect(drive.stats().throttle?.queuedWrites).toBe(0);
    await server.close();
    await drive.close();
    await mem.unref();
    await layer.close();
  });
});
