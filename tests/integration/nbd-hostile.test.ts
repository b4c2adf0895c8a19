import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { prngU32 } from '../../src/bench/prng.js';
import { BlockLayer, type Drive, NbdServer } from '../../src/index.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { RawNbdClient } from '../helpers/nbd-raw-client.js';

/*
 * Hostile clients (issue 11): a seeded stream of misbehaving connections against one in-process
 * NbdServer while a well-behaved client keeps writing, reading back and flushing. The server must
 * stay up, keep serving the good client, drop every hostile connection, and not leak.
 */

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
/** The good client's region; hostile WRITEs stay out of it (they land at HOSTILE_BASE and up). */
const GOOD_REGION = 1 * MiB;
const HOSTILE_BASE = 8 * MiB;
const MAX_CONNECTIONS = 64;
const HANDSHAKE_TIMEOUT_MS = 500;
const HOSTILE_CLIENTS = 300;
const WORKERS = 8;
/** Hard cap on one hostile client's life. */
const CLIENT_CAP_MS = 1500;
/** Fixed so failures replay; NBD_HOSTILE_SEED tries another stream. */
const SEED = Number(process.env.NBD_HOSTILE_SEED ?? 0x11_4057_11);

const layer = new BlockLayer();
afterAll(async () => {
  await layer.close();
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A socket that collects what it receives and tells whether the server closed it. */
function rawConnect(port: number): Promise<net.Socket & { got: number; gone: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }) as net.Socket & { got: number; gone: Promise<void> };
    s.got = 0;
    s.gone = new Promise((r) => s.on('close', () => r()));
    s.on('data', (d: Buffer) => {
      s.got += d.byteLength;
    });
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function request(type: number, offset: bigint, length: number, cookie: bigint, flags = 0, magic = P.NBD_REQUEST_MAGIC): Buffer {
  const b = Buffer.alloc(P.REQUEST_SIZE);
  b.writeUInt32BE(magic >>> 0, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeBigUInt64BE(offset, 16);
  b.writeUInt32BE(length >>> 0, 24);
  return b;
}

/** The bytes of a complete valid handshake: client flags, STRUCTURED_REPLY, GO on the default export. */
function validHandshakeBytes(): Buffer {
  return Buffer.concat([
    Buffer.from([0, 0, 0, P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES]),
    P.encodeOptionHeader(P.NBD_OPT_STRUCTURED_REPLY, 0),
    P.encodeOptionHeader(P.NBD_OPT_GO, P.encodeInfoRequest('').byteLength),
    P.encodeInfoRequest(''),
  ]);
}

const CLIENT_FLAGS = Buffer.from([0, 0, 0, P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES]);

interface Tally {
  behaviours: Record<string, number>;
  /** Behaviours that ran to their end, and why the others stopped (the server closing on them). */
  finished: Record<string, number>;
  failures: Record<string, number>;
  /** Silent mid-handshake clients the server disconnected (by the handshake timeout). */
  silentDropped: number;
  silent: number;
  /** Burst connections not greeted (over maxConnections: waiting for a slot, or closed). */
  refused: number;
  /** Replies to requests past the end of the export that were not an error. */
  pastEndAccepted: number;
  /** Protocol violations after which the server kept the connection open. */
  notDropped: string[];
  /** Unknown options answered with something other than an error reply. */
  unknownOptionAccepted: number;
  /** Unknown commands answered with something other than one EINVAL error chunk. */
  unknownCommandAccepted: number;
}

type Behaviour = (port: number, rnd: () => number, tally: Tally, track: (s: net.Socket) => void) => Promise<void>;

/**
 * Waits for the server to hang up on a protocol violation; counts it in the tally if it does not.
 * During the handshake, `connectedAt` tells a hang-up for the violation from one by the handshake timeout.
 */
async function expectDropped(closed: Promise<void>, tally: Tally, what: string, connectedAt?: number): Promise<void> {
  const dropped = await Promise.race([closed.then(() => true), sleep(1000).then(() => false)]);
  if (!dropped || (connectedAt !== undefined && Date.now() - connectedAt >= HANDSHAKE_TIMEOUT_MS)) tally.notDropped.push(what);
}

const randomBytes = (rnd: () => number, n: number) => Buffer.from(Array.from({ length: n }, () => rnd() & 0xff));

const behaviours: Record<string, Behaviour> = {
  async randomFromStart(port, rnd, _t, track) {
    const s = await rawConnect(port);
    track(s);
    s.write(randomBytes(rnd, 1 + (rnd() % 300)));
    await Promise.race([s.gone, sleep(20 + (rnd() % 80))]);
  },
  async greetingThenRandomOptionBytes(port, rnd, _t, track) {
    const c = await RawNbdClient.connect(port);
    track(c.socket);
    await c.read(P.SERVER_GREETING_SIZE);
    c.write(Buffer.concat([CLIENT_FLAGS, randomBytes(rnd, 1 + (rnd() % 200))]));
    await Promise.race([c.closed, sleep(20 + (rnd() % 80))]);
  },
  async badOptionMagic(port, rnd, tally, track) {
    const c = await RawNbdClient.connect(port);
    track(c.socket);
    const connectedAt = Date.now();
    await c.read(P.SERVER_GREETING_SIZE);
    const h = P.encodeOptionHeader(P.NBD_OPT_GO, 0);
    h.writeUInt32BE((h.readUInt32BE(0) ^ (1 + (rnd() % 0xfffffffe))) >>> 0, 0);
    c.write(Buffer.concat([CLIENT_FLAGS, h]));
    await expectDropped(c.closed, tally, 'bad option magic', connectedAt);
  },
  async hugeOptionLength(port, rnd, tally, track) {
    const c = await RawNbdClient.connect(port);
    track(c.socket);
    const connectedAt = Date.now();
    await c.read(P.SERVER_GREETING_SIZE);
    const options = [P.NBD_OPT_GO, P.NBD_OPT_INFO, P.NBD_OPT_EXPORT_NAME, P.NBD_OPT_SET_META_CONTEXT, 0xdead];
    c.write(Buffer.concat([CLIENT_FLAGS, P.encodeOptionHeader(options[rnd() % options.length] as number, 2 ** 31 + (rnd() % 1000))]));
    // Streams option data: a server that tried to take it all would buffer it.
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    for (let i = 0; i < 64 && !c.isClosed; i++) {
      c.write(chunk);
      await sleep(1);
    }
    await expectDropped(c.closed, tally, 'huge option length', connectedAt);
  },
  async unknownOptionCodes(port, rnd, tally, track) {
    const c = await RawNbdClient.connect(port);
    track(c.socket);
    await c.read(P.SERVER_GREETING_SIZE);
    c.write(CLIENT_FLAGS);
    for (let i = 1 + (rnd() % 4); i > 0; i--) {
      const code = 12 + (rnd() % 0x7ffffff0);
      const replies = await c.option(code, randomBytes(rnd, rnd() % 32));
      if (replies.length !== 1 || (replies[0]?.type ?? 0) < 0x80000000) tally.unknownOptionAccepted++;
    }
  },
  async truncatedOptionThenSilence(port, rnd, tally, track) {
    const c = await RawNbdClient.connect(port);
    track(c.socket);
    await c.read(P.SERVER_GREETING_SIZE);
    const len = 20 + (rnd() % 200);
    c.write(Buffer.concat([CLIENT_FLAGS, P.encodeOptionHeader(P.NBD_OPT_GO, len), randomBytes(rnd, rnd() % len)]));
    tally.silent++;
    // Waits out the handshake timeout: the server must hang up on its own.
    const dropped = await Promise.race([c.closed.then(() => true), sleep(HANDSHAKE_TIMEOUT_MS + 700).then(() => false)]);
    if (dropped) tally.silentDropped++;
  },
  async earlyDisconnect(port, rnd, _t, track) {
    const s = await rawConnect(port);
    track(s);
    const all = validHandshakeBytes();
    s.write(all.subarray(0, rnd() % all.byteLength));
    await sleep(rnd() % 20);
  },
  async randomCommands(port, rnd, tally, track) {
    const c = await RawNbdClient.connect(port);
    track(c.socket);
    await c.structuredGo('');
    for (let i = 1 + (rnd() % 6); i > 0 && !c.isClosed; i--) {
      const cookie = BigInt(rnd());
      const kind = rnd() % 7;
      if (kind === 0) {
        // Bad magic: the server drops the connection.
        c.write(request(P.NBD_CMD_READ, 0n, 512, cookie, 0, P.NBD_REQUEST_MAGIC ^ (1 + (rnd() % 0xfffffffe))));
        await expectDropped(c.closed, tally, 'bad request magic');
      } else if (kind === 1) {
        // Unknown command type: EINVAL (no payload read for it), and the connection goes on.
        c.write(request(9 + (rnd() % 0xfff0), BigInt(HOSTILE_BASE), 512, cookie));
        const r = await c.structuredReply();
        if (r.length !== 1 || r[0]?.cookie !== cookie || r[0]?.type !== P.NBD_REPLY_TYPE_ERROR || r[0]?.payload.readUInt32BE(0) !== P.NBD_EINVAL) tally.unknownCommandAccepted++;
      } else if (kind === 2) {
        // A huge READ: refused with an error reply (the connection may stay).
        c.write(request(P.NBD_CMD_READ, 0n, 0x80000000 + (rnd() % 0x7fffffff), cookie));
        await Promise.race([c.structuredReply(), c.closed, sleep(300)]);
      } else if (kind === 3) {
        // Past the end of the export (READ, BLOCK_STATUS, TRIM, WRITE_ZEROES): an error reply.
        const types = [P.NBD_CMD_READ, P.NBD_CMD_BLOCK_STATUS, P.NBD_CMD_TRIM, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_CACHE];
        const offsets = [BigInt(SIZE), BigInt(SIZE - 1), 2n ** 53n, 2n ** 63n + BigInt(rnd()), 2n ** 64n - 1n];
        c.write(request(types[rnd() % types.length] as number, offsets[rnd() % offsets.length] as bigint, 1 + (rnd() % 65536), cookie));
        const r = await c.structuredReply();
        if (r.length !== 1 || r[0]?.cookie !== cookie || (r[0]?.type ?? 0) < 0x8000) tally.pastEndAccepted++;
      } else if (kind === 4) {
        // A WRITE past the end with its payload: ENOSPC, the payload consumed.
        c.write(Buffer.concat([request(P.NBD_CMD_WRITE, BigInt(SIZE - 100), 512, cookie), Buffer.alloc(512, 0xee)]));
        const r = await c.structuredReply();
        if (r.length !== 1 || r[0]?.cookie !== cookie || (r[0]?.type ?? 0) < 0x8000) tally.pastEndAccepted++;
      } else if (kind === 5) {
        // A huge WRITE: dropped before any payload is buffered.
        c.write(Buffer.concat([request(P.NBD_CMD_WRITE, BigInt(HOSTILE_BASE), 0x40000000 + (rnd() % 0x3fffffff), cookie), randomBytes(rnd, rnd() % 4096)]));
        await expectDropped(c.closed, tally, 'huge write');
      } else {
        // A WRITE announcing more than it sends, then the client leaves.
        const announced = 4096 + (rnd() % (1 * MiB));
        const offset = HOSTILE_BASE + (rnd() % (4 * MiB));
        c.write(Buffer.concat([request(P.NBD_CMD_WRITE, BigInt(offset), announced, cookie), randomBytes(rnd, rnd() % 4096)]));
        await sleep(rnd() % 20);
        return;
      }
    }
  },
  async slowReader(port, rnd, _t, track) {
    const c = await RawNbdClient.connect(port);
    track(c.socket);
    await c.handshake('');
    const n = 16 + (rnd() % 64);
    const bufs: Buffer[] = [];
    for (let i = 0; i < n; i++) bufs.push(request(P.NBD_CMD_READ, BigInt((rnd() % 60) * 256 * 1024), 256 * 1024, BigInt(i)));
    // Replies are never read: the socket is paused so they pile up on the server's side.
    c.socket.pause();
    c.write(Buffer.concat(bufs));
    await sleep(50 + (rnd() % 150));
  },
  async burst(port, rnd, tally, track) {
    const n = MAX_CONNECTIONS + 8 + (rnd() % 8);
    const socks = await Promise.all(Array.from({ length: n }, () => rawConnect(port)));
    for (const s of socks) track(s);
    // The greeting comes at once while a slot is free; past maxConnections a connection waits
    // without one (or, with as many waiting, is closed).
    await sleep(100);
    tally.refused += socks.filter((s) => s.got === 0).length;
    for (const s of socks) s.destroy();
  },
};

/** Behaviours by weight: a burst fills the server for everyone, so it comes rarely. */
const names = Object.keys(behaviours).flatMap((n) => (n === 'burst' ? [n] : [n, n, n, n]));

/** Runs one hostile client to completion or its cap; its sockets are destroyed either way. */
async function hostile(name: string, port: number, rnd: () => number, tally: Tally): Promise<void> {
  tally.behaviours[name] = (tally.behaviours[name] ?? 0) + 1;
  const finished = () => {
    tally.finished[name] = (tally.finished[name] ?? 0) + 1;
  };
  const sockets: net.Socket[] = [];
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      (behaviours[name] as Behaviour)(port, rnd, tally, (s) => sockets.push(s)).then(finished, (e: Error) => {
        tally.failures[e.message] = (tally.failures[e.message] ?? 0) + 1;
      }),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLIENT_CAP_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    for (const s of sockets) s.destroy();
  }
}

/** The good client: 4 KiB writes at random places of its region, each read back, then a flush. */
async function goodClient(port: number, shadow: Buffer, stop: () => boolean, seed: number): Promise<{ rounds: number; errors: string[] }> {
  const rnd = prngU32(seed);
  const errors: string[] = [];
  let rounds = 0;
  const c = await RawNbdClient.connect(port);
  try {
    await c.handshake('');
    let cookie = 1n;
    while (!stop()) {
      const offset = (rnd() % (GOOD_REGION / 4096)) * 4096;
      const data = Buffer.alloc(4096, rounds & 0xff);
      data.writeUInt32BE(rnd(), 0);
      data.writeUInt32BE(rounds, 4);
      c.request(P.NBD_CMD_WRITE, offset, 4096, cookie, 0, data);
      const w = await c.simpleReply();
      if (w.error !== 0 || w.cookie !== cookie) errors.push(`write ${offset}: error ${w.error} cookie ${w.cookie}`);
      data.copy(shadow, offset);
      cookie++;
      c.request(P.NBD_CMD_READ, offset, 4096, cookie);
      const r = await c.simpleReply(4096);
      if (r.error !== 0 || r.cookie !== cookie || !r.data.equals(data)) errors.push(`read ${offset}: error ${r.error}, data ${r.data.equals(data) ? 'same' : 'differs'}`);
      cookie++;
      c.request(P.NBD_CMD_FLUSH, 0, 0, cookie);
      const f = await c.simpleReply();
      if (f.error !== 0 || f.cookie !== cookie) errors.push(`flush: error ${f.error}`);
      cookie++;
      rounds++;
      await sleep(3);
    }
    c.request(P.NBD_CMD_DISC, 0, 0, cookie);
    await Promise.race([c.closed, sleep(1000)]);
  } catch (e) {
    errors.push(`good client failed: ${(e as Error).message}`);
  } finally {
    c.destroy();
  }
  return { rounds, errors };
}

async function pollUntil(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(10);
  }
  return true;
}

function heapNow(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().heapUsed;
}

describe('NbdServer under hostile clients', () => {
  it('keeps serving a well-behaved client and drops every hostile one, without leaks or stray errors', async () => {
    const faults: unknown[] = [];
    const onFault = (e: unknown) => faults.push(e);
    process.on('unhandledRejection', onFault);
    process.on('uncaughtException', onFault);
    let drive: Drive | undefined;
    const server = new NbdServer({ maxConnections: MAX_CONNECTIONS, handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS });
    const serverErrors: string[] = [];
    server.on('error', ({ error }) => serverErrors.push(error.message));
    try {
      drive = await layer.openDrive({ driver: 'memory', size: SIZE });
      server.addExport({ name: '', drive });
      const addr = await server.listen({ host: '127.0.0.1', port: 0 });
      const port = (addr as { port: number }).port;
      const heapBefore = heapNow();

      const shadow = Buffer.alloc(GOOD_REGION);
      let done = false;
      const good = goodClient(port, shadow, () => done, SEED ^ 0x5a5a);
      const tally: Tally = { behaviours: {}, finished: {}, failures: {}, silentDropped: 0, silent: 0, refused: 0, notDropped: [], pastEndAccepted: 0, unknownOptionAccepted: 0, unknownCommandAccepted: 0 };
      const master = prngU32(SEED);
      let next = 0;
      // A burst holds every connection slot: the other workers wait for it to end and for the
      // server to let its connections go, so their clients are not all refused.
      let gate: Promise<unknown> = Promise.resolve();
      await Promise.all(
        Array.from({ length: WORKERS }, async () => {
          while (next < HOSTILE_CLIENTS) {
            next++;
            const rnd = prngU32(master());
            const name = names[rnd() % names.length] as string;
            if (name === 'burst') {
              const run = hostile(name, port, rnd, tally).then(() => pollUntil(() => server.connectionCount < MAX_CONNECTIONS - WORKERS, 2000));
              gate = Promise.all([gate, run]);
              await run;
            } else {
              await gate;
              await hostile(name, port, rnd, tally);
            }
          }
        }),
      );
      done = true;
      const g = await good;

      // The hostile clients are gone: every connection the server held ends.
      const drained = await pollUntil(() => server.connectionCount === 0, 3000);
      const heapAfter = heapNow();

      // A fresh well-behaved client still works.
      const fresh = await RawNbdClient.connect(port);
      const { size } = await fresh.handshake('');
      fresh.request(P.NBD_CMD_READ, 0, 4096, 77n);
      const fr = await fresh.simpleReply(4096);
      fresh.destroy();

      const onDrive = await drive.read(0, GOOD_REGION);
      console.log(`hostile clients: ${JSON.stringify(tally)}; good client rounds ${g.rounds}; server error events ${serverErrors.length}; heap growth ${((heapAfter - heapBefore) / MiB).toFixed(1)} MiB`);

      expect(g.errors).toEqual([]);
      expect(g.rounds).toBeGreaterThan(10);
      expect(drained).toBe(true);
      expect(size).toBe(SIZE);
      expect(fr.error).toBe(0);
      expect(fr.data.equals(shadow.subarray(0, 4096))).toBe(true);
      expect(Buffer.from(onDrive).equals(shadow)).toBe(true);
      expect(tally.silentDropped).toBe(tally.silent);
      expect(tally.pastEndAccepted).toBe(0);
      expect(tally.notDropped).toEqual([]);
      expect(tally.unknownOptionAccepted).toBe(0);
      expect(tally.unknownCommandAccepted).toBe(0);
      if ((tally.behaviours.burst ?? 0) > 0) expect(tally.refused).toBeGreaterThan(0);
      // Every behaviour ran and most ran to their end (not refused for want of a slot).
      for (const n of Object.keys(behaviours)) expect(tally.finished[n] ?? 0, n).toBeGreaterThan(0);
      const finishedAll = Object.values(tally.finished).reduce((a, b) => a + b, 0);
      expect(finishedAll).toBeGreaterThan(HOSTILE_CLIENTS * 0.8);
      expect(heapAfter - heapBefore).toBeLessThan(64 * MiB);
      expect(faults).toEqual([]);
    } finally {
      process.off('unhandledRejection', onFault);
      process.off('uncaughtException', onFault);
      await server.close();
    }
  }, 30_000);
});

describe('NbdServer and a client that never reads its option replies', () => {
  it('stops reading options once replies back up, so the handshake cannot buffer without bound', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: MiB });
    // A 4 KiB description makes each 16-byte NBD_OPT_LIST cost the server ~4 KiB of reply.
    const server = new NbdServer({ exports: [{ name: '', drive, description: 'd'.repeat(4096) }], handshakeTimeoutMs: 1000 });
    try {
      const { port } = (await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number };
      const c = await RawNbdClient.connect(port);
      await c.read(P.SERVER_GREETING_SIZE);
      c.socket.pause();
      c.write(CLIENT_FLAGS);
      const options = Buffer.concat(Array.from({ length: 4096 }, () => P.encodeOptionHeader(P.NBD_OPT_LIST, 0)));
      const base = process.memoryUsage().arrayBuffers;
      let peak = 0;
      const sampler = setInterval(() => {
        peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
      }, 10);
      const t0 = Date.now();
      while (Date.now() - t0 < 800 && !c.isClosed) {
        if (!c.socket.write(options)) await Promise.race([new Promise((r) => c.socket.once('drain', r)), c.closed, sleep(50)]);
        else await sleep(0);
      }
      clearInterval(sampler);
      c.destroy();
      // Unbounded, this grows by well over 100 MiB; bounded, by the reader's slack and a small reply backlog.
      expect(peak).toBeLessThan(64 * MiB);
      expect(await pollUntil(() => server.connectionCount === 0, 2000)).toBe(true);
    } finally {
      await server.close();
    }
  }, 20_000);
});
