import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, NbdServer } from '../../src/index.js';
import { NbdClient } from '../../src/drivers/nbd/client.js';
import { haveProgram, waitForPort } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const haveQemuNbd = haveProgram('qemu-nbd');
if (!haveQemuNbd && process.env.CI === 'true') throw new Error('qemu-nbd missing in CI: .ci/run must install qemu-utils');
if (!haveQemuNbd) console.log('nbd reconnect test against qemu-nbd skipped: install qemu-utils (apt-get install qemu-utils) to run it');

const layer = new BlockLayer();
let dir = '';
let backing: Drive;
const image = Buffer.alloc(4 * MiB);
for (let i = 0; i < image.length; i += 512) image.writeUInt32BE(i, i);

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-reconnect-'));
  backing = await layer.openDrive({ driver: 'memory', size: image.length });
  await backing.write(0, image);
});
afterAll(async () => {
  await backing?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Counts how each promise settles, to show that every request settles exactly once. */
class Tally {
  resolved = 0;
  rejected: Error[] = [];
  watch<T>(p: Promise<T>): Promise<T> {
    p.then(
      () => this.resolved++,
      (e: Error) => this.rejected.push(e),
    );
    return p;
  }
  get settled(): number {
    return this.resolved + this.rejected.length;
  }
}

/**
 * A TCP relay in front of an NBD server on a fixed port, so a test can hold replies (requests
 * stay in flight at the server's side), cut every connection, and stop and restart listening.
 */
class Relay {
  private server: net.Server | null = null;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  holding = false;
  constructor(
    readonly port: number,
    private readonly target: number,
  ) {}

  async start(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: this.target });
      const pair: [net.Socket, net.Socket] = [client, upstream];
      this.pairs.add(pair);
      client.on('data', (d) => upstream.write(d));
      upstream.on('data', (d) => {
        if (!this.holding) client.write(d);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
        this.pairs.delete(pair);
      };
      for (const s of pair) {
        s.on('close', end);
        s.on('error', end);
      }
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.server = server;
  }

  /** Stops listening and cuts every connection (replies held so far are lost). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

async function ourServer(port = 0): Promise<{ server: NbdServer; port: number }> {
  const server = new NbdServer({ exports: [{ name: 'disk', drive: backing }] });
  const a = await server.listen({ host: '127.0.0.1', port });
  if (!('port' in a)) throw new Error('expected a TCP address');
  return { server, port: a.port };
}

const inet = (port: number) => ({ type: 'inet' as const, host: '127.0.0.1', port });
const slice = (offset: number, length: number) => image.subarray(offset, offset + length);

describe('nbd client reconnect (reconnect-delay)', () => {
  it('requests in flight at the drop and issued during the outage wait, are sent again after the reconnection, and settle once', async () => {
    const { server, port } = await ourServer();
    const relay = new Relay(await freePort(), port);
    await relay.start();
    const d = await layer.openDrive({ driver: 'nbd', server: inet(relay.port), export: 'disk', reconnectDelay: 10 });
    try {
      const tally = new Tally();
      // In flight at the drop: the server got them, the replies are held and then lost with the connection.
      relay.holding = true;
      const inFlight = Array.from({ length: 16 }, (_, i) => tally.watch(d.read(i * 65536, 4096)));
      await sleep(100);
      await relay.stop();
      // Issued during the outage (reads, a write, a flush).
      const during = Array.from({ length: 8 }, (_, i) => tally.watch(d.read(MiB + i * 8192, 8192)));
      const payload = Buffer.alloc(4096, 0xab);
      const write = tally.watch(d.write(3 * MiB, payload));
      const flush = tally.watch(d.flush());
      await sleep(400); // several reconnection attempts fail meanwhile
      expect(tally.settled).toBe(0);
      relay.holding = false;
      await relay.start();
      const a = await Promise.all(inFlight);
      const b = await Promise.all(during);
      await write;
      await flush;
      for (const [i, r] of a.entries()) expect(Buffer.from(r).equals(slice(i * 65536, 4096))).toBe(true);
      for (const [i, r] of b.entries()) expect(Buffer.from(r).equals(slice(MiB + i * 8192, 8192))).toBe(true);
      expect(Buffer.from(await backing.read(3 * MiB, 4096)).equals(payload)).toBe(true);
      await backing.write(3 * MiB, slice(3 * MiB, 4096));
      await sleep(50);
      expect(tally.resolved).toBe(26);
      expect(tally.rejected).toEqual([]);
    } finally {
      await d.close();
      await relay.stop();
      await server.close();
    }
  });

  it('our NbdServer closed and started again on the same port: reads issued while it is down complete', async () => {
    let { server, port } = await ourServer();
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port), export: 'disk', reconnectDelay: 10, readOnly: true });
    try {
      // Reads running when the server goes away.
      const tally = new Tally();
      const stream = (async () => {
        for (let i = 0; i < 200; i++) expect(Buffer.from(await tally.watch(d.read((i * 4096) % image.length, 4096))).equals(slice((i * 4096) % image.length, 4096))).toBe(true);
      })();
      await sleep(20);
      await server.close();
      const during = Array.from({ length: 8 }, (_, i) => tally.watch(d.read(2 * MiB + i * 4096, 4096)));
      await sleep(300);
      ({ server } = await ourServer(port));
      const r = await Promise.all(during);
      for (const [i, b] of r.entries()) expect(Buffer.from(b).equals(slice(2 * MiB + i * 4096, 4096))).toBe(true);
      await stream;
      expect(tally.rejected).toEqual([]);
      expect(tally.resolved).toBe(208);
    } finally {
      await d.close();
      await server.close();
    }
  });

  it('with reconnect-delay 0 (the default) a drop fails requests in flight and later ones with EIO, even once the server is back', async () => {
    const { server, port } = await ourServer();
    const relay = new Relay(await freePort(), port);
    await relay.start();
    const d = await layer.openDrive({ driver: 'nbd', server: inet(relay.port), export: 'disk' });
    try {
      const tally = new Tally();
      relay.holding = true;
      const inFlight = Array.from({ length: 4 }, (_, i) => tally.watch(d.read(i * 4096, 4096)));
      await sleep(100);
      await relay.stop();
      for (const p of inFlight) await expect(p).rejects.toMatchObject({ code: 'EIO' });
      relay.holding = false;
      await relay.start();
      await expect(d.read(0, 4096)).rejects.toMatchObject({ code: 'EIO' });
      expect(tally.rejected.length).toBe(4);
      expect(tally.resolved).toBe(0);
    } finally {
      await d.close();
      await relay.stop();
      await server.close();
    }
  });

  it('after reconnect-delay the waiting requests fail with EIO naming it, new ones fail at once; reconnection goes on and later requests work', async () => {
    const { server, port } = await ourServer();
    const relay = new Relay(await freePort(), port);
    await relay.start();
    const client = await NbdClient.connect({ server: inet(relay.port), exportName: 'disk', reconnectDelay: 1 });
    try {
      await relay.stop();
      const waiting = client.read(0, Buffer.alloc(512));
      await expect(waiting).rejects.toMatchObject({ code: 'EIO', message: expect.stringContaining('reconnect-delay 1 s') });
      await expect(client.read(0, Buffer.alloc(512))).rejects.toMatchObject({ code: 'EIO' });
      await relay.start();
      for (let i = 0; client.reconnects === 0 && i < 100; i++) await sleep(50);
      expect(client.reconnects).toBe(1);
      const b = Buffer.alloc(512);
      await client.read(4096, b);
      expect(b.equals(slice(4096, 512))).toBe(true);
    } finally {
      await client.close();
      await relay.stop();
      await server.close();
    }
  });

  it('a reconnection to an export whose size changed fails the waiting requests with EIO instead of serving another disk', async () => {
    const { server, port } = await ourServer();
    const client = await NbdClient.connect({ server: inet(port), exportName: 'disk', reconnectDelay: 10 });
    const other = await layer.openDrive({ driver: 'memory', size: MiB });
    let second: NbdServer | undefined;
    try {
      await server.close();
      const waiting = client.read(0, Buffer.alloc(512));
      second = new NbdServer({ exports: [{ name: 'disk', drive: other }] });
      await second.listen({ host: '127.0.0.1', port });
      await expect(waiting).rejects.toMatchObject({ code: 'EIO', message: expect.stringContaining('size changed') });
      await expect(client.read(0, Buffer.alloc(512))).rejects.toMatchObject({ code: 'EIO' });
    } finally {
      await client.close();
      await second?.close();
      await other.close();
    }
  });

  it('open-timeout retries the first connection until the server is up; without it the open fails at once', async () => {
    const port = await freePort();
    await expect(layer.openDrive({ driver: 'nbd', server: inet(port), export: 'disk' })).rejects.toMatchObject({ code: 'ENXIO' });
    let server: NbdServer | undefined;
    const later = sleep(300).then(async () => {
      server = (await ourServer(port)).server;
    });
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port), export: 'disk', openTimeout: 10, readOnly: true });
    await later;
    expect(Buffer.from(await d.read(512, 512)).equals(slice(512, 512))).toBe(true);
    await d.close();
    await server?.close();
  });

  it('bad reconnect-delay and open-timeout values are EINVAL naming the field', async () => {
    await expect(layer.openDrive({ driver: 'nbd', server: inet(1), reconnectDelay: -1 })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('reconnectDelay') });
    await expect(layer.openDrive({ driver: 'nbd', server: inet(1), openTimeout: 'soon' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('openTimeout') });
  });
});

describe.skipIf(!haveQemuNbd)('nbd client reconnect against qemu-nbd', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
  });

  async function qemuNbd(file: string, port: number): Promise<ChildProcess> {
    const child = spawn('qemu-nbd', ['-f', 'raw', '-x', 'disk', '-b', '127.0.0.1', '-p', String(port), '--persistent', '-e', '4', file], { stdio: 'ignore' });
    children.push(child);
    if (await waitForPort(port)) return child;
    throw new Error('qemu-nbd did not start');
  }

  it('qemu-nbd killed (SIGKILL) mid-I/O and restarted on the same port: every read completes with the right bytes', async () => {
    const file = path.join(dir, 'disk.raw');
    fs.writeFileSync(file, image);
    const port = await freePort();
    const first = await qemuNbd(file, port);
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port), export: 'disk', reconnectDelay: 20 });
    try {
      const tally = new Tally();
      let kill: Promise<void> | null = null;
      const reads: Promise<Uint8Array>[] = [];
      for (let i = 0; i < 400; i++) {
        reads.push(tally.watch(d.read((i * 12288) % (image.length - 4096), 4096)));
        if (i === 100) {
          kill = new Promise<void>((resolve) => first.once('exit', () => resolve()));
          process.kill(first.pid as number, 'SIGKILL');
          await kill;
        }
        if (i === 200) await qemuNbd(file, port);
        if (i % 16 === 0) await sleep(1);
      }
      const all = await Promise.all(reads);
      for (const [i, r] of all.entries()) expect(Buffer.from(r).equals(slice((i * 12288) % (image.length - 4096), 4096))).toBe(true);
      expect(tally.resolved).toBe(400);
      expect(tally.rejected).toEqual([]);
    } finally {
      await d.close();
    }
  });
});
