import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, NbdServer } from '../../src/index.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { RawNbdClient } from '../helpers/nbd-raw-client.js';

const MiB = 1024 * 1024;
const CLIENTS = 8;
const WRITES = 4;
// Enough unread reply bytes per connection to fill the kernel's socket buffers (up to ~4 MiB on loopback).
const READS = 12;
const layer = new BlockLayer();
let drive: Drive;

const region = (client: number, i: number) => (client * (WRITES + READS) + i) * MiB;
const fill = (client: number, i: number) => (client * 16 + i + 1) & 0xff;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  drive = await layer.openDrive({ driver: 'memory', size: CLIENTS * (WRITES + READS) * MiB });
  // What the READs will find: each of their regions filled with its own byte.
  for (let c = 0; c < CLIENTS; c++) for (let i = WRITES; i < WRITES + READS; i++) await drive.write(region(c, i), Buffer.alloc(MiB, fill(c, i)));
});
afterAll(async () => {
  await drive?.close();
});

/**
 * CLIENTS connections each send WRITES 1 MiB writes and READS 1 MiB reads without reading a
 * single reply; then they read them all. Returns the server's peak of accounted bytes and
 * whether requests had to wait for the budget.
 */
async function flood(memoryBudget: number): Promise<{ peak: number; sawWaiting: boolean; inUseAfter: number }> {
  const server = new NbdServer({ exports: [{ name: '', drive }], maxRequest: MiB, memoryBudget, maxConnections: CLIENTS });
  const a = await server.listen({ host: '127.0.0.1', port: 0 });
  if (!('port' in a)) throw new Error('expected TCP');
  const clients: RawNbdClient[] = [];
  try {
    for (let c = 0; c < CLIENTS; c++) {
      const client = await RawNbdClient.connect(a.port);
      await client.handshake('');
      // The client stops reading: replies pile up on the server's side (and in the kernel buffers).
      client.socket.pause();
      for (let i = 0; i < WRITES; i++) client.request(P.NBD_CMD_WRITE, region(c, i), MiB, BigInt(i), 0, Buffer.alloc(MiB, fill(c, i)));
      for (let i = WRITES; i < WRITES + READS; i++) client.request(P.NBD_CMD_READ, region(c, i), MiB, BigInt(i));
      clients.push(client);
    }
    let sawWaiting = false;
    for (let t = 0; t < 40; t++) {
      await sleep(25);
      if (server.budget.waiting > 0) sawWaiting = true;
      expect(server.memoryInUse).toBeLessThanOrEqual(Math.max(memoryBudget, MiB));
    }
    // Now every client reads every reply: all requests complete, none failed for want of memory.
    await Promise.all(
      clients.map(async (client, c) => {
        client.socket.resume();
        const seen = new Set<number>();
        for (let k = 0; k < WRITES + READS; k++) {
          const h = P.decodeSimpleReply(await client.read(16));
          const i = Number(h.cookie);
          expect(h.error).toBe(0);
          expect(seen.has(i)).toBe(false);
          seen.add(i);
          if (i >= WRITES) expect((await client.read(MiB)).equals(Buffer.alloc(MiB, fill(c, i)))).toBe(true);
        }
      }),
    );
    for (let c = 0; c < CLIENTS; c++) {
      for (let i = 0; i < WRITES; i++) expect(Buffer.from(await drive.read(region(c, i), MiB)).equals(Buffer.alloc(MiB, fill(c, i)))).toBe(true);
    }
    for (let t = 0; t < 100 && server.memoryInUse > 0; t++) await sleep(10);
    return { peak: server.memoryPeak, sawWaiting, inUseAfter: server.memoryInUse };
  } finally {
    for (const c of clients) c.destroy();
    await server.close();
  }
}

describe('NbdServer memory budget (server-wide)', () => {
  it('connections that do not read their replies hold at most the budget; every request completes once they read', async () => {
    const r = await flood(4 * MiB);
    expect(r.peak).toBeLessThanOrEqual(4 * MiB);
    expect(r.peak).toBeGreaterThanOrEqual(2 * MiB);
    expect(r.sawWaiting).toBe(true);
    expect(r.inUseAfter).toBe(0);
  });

  it('the same flood with a large budget holds far more (what the budget prevents)', async () => {
    const r = await flood(1024 * MiB);
    expect(r.peak).toBeGreaterThan(4 * MiB);
    expect(r.sawWaiting).toBe(false);
    expect(r.inUseAfter).toBe(0);
  });

  it('a budget below maxRequest, or not a positive integer, is EINVAL naming memoryBudget', () => {
    expect(() => new NbdServer({ maxRequest: 2 * MiB, memoryBudget: MiB })).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'memoryBudget' }));
    expect(() => new NbdServer({ memoryBudget: -1 })).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'memoryBudget' }));
  });

  it('a connection waiting for budget that is closed gives up its place, and the server still closes cleanly', async () => {
    const server = new NbdServer({ exports: [{ name: '', drive }], maxRequest: MiB, memoryBudget: MiB });
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected TCP');
    const hog = await RawNbdClient.connect(a.port);
    await hog.handshake('');
    hog.socket.pause();
    for (let i = 0; i < 12; i++) hog.request(P.NBD_CMD_READ, 0, MiB, BigInt(i));
    const other = await RawNbdClient.connect(a.port);
    await other.handshake('');
    other.request(P.NBD_CMD_READ, 0, MiB, 1n);
    await sleep(200);
    expect(server.budget.waiting).toBeGreaterThan(0);
    other.destroy();
    await other.closed;
    await sleep(50);
    // The hog reads: everything it asked for arrives.
    hog.socket.resume();
    for (let k = 0; k < 12; k++) expect((await hog.simpleReply(MiB)).error).toBe(0);
    hog.destroy();
    await server.close();
    expect(server.memoryInUse).toBe(0);
    expect(server.budget.waiting).toBe(0);
  });
});
