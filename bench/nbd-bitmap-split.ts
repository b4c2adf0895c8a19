/**
 * Where the server CPU of a dirty-bitmap map goes (#23): the same two servers as bench/nbd-bitmap.ts
 * (`blocklayer serve -r -B b0` and `qemu-nbd -r -B b0` over the same 64 GiB qcow2 with 10,000 dirty
 * 64 KiB granules), measured in three parts, alternately, each server's CPU from /proc:
 *  (a) connect: a connection that negotiates as nbdinfo does (structured replies, SET_META_CONTEXT
 *      qemu:dirty-bitmap:b0, GO asking for the block sizes) and then disconnects (NBD_CMD_DISC);
 *  (b) walk: on one connection, the whole disk's BLOCK_STATUS as nbdinfo asks for it (requests of
 *      2^32 - 1 bytes, each from where the last reply ended, one at a time), repeated;
 *  (c) map: a whole `nbdinfo --map=qemu:dirty-bitmap:b0` process.
 * A map is about (a) + (b). Figures are CPU ms per operation, the median over rounds; "main" is
 * the main thread's share (/proc/PID/schedstat, ns), "all" every thread's (utime + stime, 10 ms ticks).
 *
 *   npx tsx bench/nbd-bitmap-split.ts [--rounds N] [--ops N]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { buildCli } from '../scripts/build-cli.js';
import { cpuMs, listening, mainCpuMs, makeImage, mapOnce } from './nbd-bitmap.js';
import { median, row } from './util.js';

const SIZE = 64 * 2 ** 30;
const IHAVEOPT = 0x49484156454f5054n;
const OPT_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const STRUCTURED_MAGIC = 0x668e33ef;
const OPT_GO = 7;
const OPT_STRUCTURED_REPLY = 8;
const OPT_SET_META_CONTEXT = 10;
const REP_ACK = 1;
const CMD_DISC = 2;
const CMD_BLOCK_STATUS = 7;
const REPLY_FLAG_DONE = 1;
const REPLY_TYPE_BLOCK_STATUS = 5;
const INFO_BLOCK_SIZE = 3;
const CONTEXT = 'qemu:dirty-bitmap:b0';

/** A bare NBD client over a unix socket: exact reads of what the server sends. */
export class RawClient {
  private readonly socket: net.Socket;
  private chunks: Buffer[] = [];
  private have = 0;
  private want = 0;
  private wake: (() => void) | null = null;
  private ended = false;
  private readonly closed: Promise<void>;

  constructor(socketPath: string) {
    this.socket = net.createConnection(socketPath);
    this.socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.have += d.length;
      if (this.wake !== null && this.have >= this.want) this.wake();
    });
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    this.socket.once('close', () => {
      this.ended = true;
      this.wake?.();
    });
  }

  async read(n: number): Promise<Buffer> {
    while (this.have < n) {
      if (this.ended) throw new Error(`connection closed with ${this.have} of ${n} bytes`);
      this.want = n;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = null;
    }
    const all = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.have -= n;
    return all.subarray(0, n);
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  /** Sends an option and reads its replies up to the final one, which must be an ACK. */
  async option(option: number, data: Buffer = Buffer.alloc(0)): Promise<void> {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
    for (;;) {
      const r = await this.read(20);
      if (r.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new Error('bad option reply magic');
      const type = r.readUInt32BE(12);
      const len = r.readUInt32BE(16);
      if (len > 0) await this.read(len);
      if (type === REP_ACK) return;
      if (type & 0x80000000) throw new Error(`option ${option} refused: ${type.toString(16)}`);
    }
  }

  /** nbdinfo's handshake for a map: structured replies, the bitmap's context, GO for the default export. */
  async handshake(): Promise<void> {
    await this.read(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3, 0); // FIXED_NEWSTYLE | NO_ZEROES
    this.write(flags);
    await this.option(OPT_STRUCTURED_REPLY);
    const q = Buffer.from(CONTEXT);
    const meta = Buffer.alloc(4 + 4 + 4 + q.length);
    meta.writeUInt32BE(0, 0); // export name '' (length 0)
    meta.writeUInt32BE(1, 4);
    meta.writeUInt32BE(q.length, 8);
    q.copy(meta, 12);
    await this.option(OPT_SET_META_CONTEXT, meta);
    const go = Buffer.alloc(4 + 2 + 2);
    go.writeUInt32BE(0, 0);
    go.writeUInt16BE(1, 4);
    go.writeUInt16BE(INFO_BLOCK_SIZE, 6);
    await this.option(OPT_GO, go);
  }

  private request(type: number, offset: number, length: number): void {
    const r = Buffer.alloc(28);
    r.writeUInt32BE(REQUEST_MAGIC, 0);
    r.writeUInt16BE(type, 6);
    r.writeBigUInt64BE(1n, 8);
    r.writeBigUInt64BE(BigInt(offset), 16);
    r.writeUInt32BE(length, 24);
    this.write(r);
  }

  /** One BLOCK_STATUS; the bytes its extents cover. */
  async blockStatus(offset: number, length: number): Promise<number> {
    this.request(CMD_BLOCK_STATUS, offset, length);
    let covered = 0;
    for (;;) {
      const h = await this.read(20);
      if (h.readUInt32BE(0) !== STRUCTURED_MAGIC) throw new Error('bad structured reply magic');
      const flags = h.readUInt16BE(4);
      const type = h.readUInt16BE(6);
      const payload = await this.read(h.readUInt32BE(16));
      if (type !== REPLY_TYPE_BLOCK_STATUS) throw new Error(`reply type ${type}`);
      for (let at = 4; at < payload.length; at += 8) covered += payload.readUInt32BE(at);
      if (flags & REPLY_FLAG_DONE) return covered;
    }
  }

  /** The whole disk as nbdinfo --map asks for it. */
  async wholeDisk(): Promise<void> {
    for (let pos = 0; pos < SIZE; ) pos += await this.blockStatus(pos, Math.min(0xffffffff, SIZE - pos));
  }

  /** NBD_CMD_DISC, then waits for the server to close. */
  async disconnect(): Promise<void> {
    this.request(CMD_DISC, 0, 0);
    this.socket.end();
    await this.closed;
  }
}

interface Cpu {
  all: number;
  main: number;
}

/** CPU ms per operation the server `pid` used for `ops` runs of `op`. */
async function cpuPer(pid: number, ops: number, op: () => Promise<void>): Promise<Cpu> {
  const all0 = cpuMs(pid);
  const main0 = mainCpuMs(pid);
  for (let i = 0; i < ops; i++) await op();
  return { all: (cpuMs(pid) - all0) / ops, main: (mainCpuMs(pid) - main0) / ops };
}

/** Runs one part against both servers alternately; prints ours vs qemu-nbd's CPU per operation. */
async function part(label: string, rounds: number, ops: number, pids: [number, number], op: (side: 0 | 1) => () => Promise<void>): Promise<{ ours: Cpu; qemu: Cpu }> {
  const q: Cpu[] = [];
  const o: Cpu[] = [];
  for (let r = 0; r < rounds; r++) {
    if (r % 2 === 0) {
      q.push(await cpuPer(pids[0], ops, op(0)));
      o.push(await cpuPer(pids[1], ops, op(1)));
    } else {
      o.push(await cpuPer(pids[1], ops, op(1)));
      q.push(await cpuPer(pids[0], ops, op(0)));
    }
  }
  const ours = { all: median(o.map((c) => c.all)), main: median(o.map((c) => c.main)) };
  const qemu = { all: median(q.map((c) => c.all)), main: median(q.map((c) => c.main)) };
  const mainRatios = o.map((c, i) => (q[i] as Cpu).main / c.main).sort((a, b) => a - b);
  row(`${label}: CPU ms all threads`, ours.all.toFixed(3), qemu.all.toFixed(3), qemu.all / ours.all);
  row(`${label}: CPU ms main thread`, ours.main.toFixed(3), qemu.main.toFixed(3), median(mainRatios), mainRatios);
  return { ours, qemu };
}

export async function nbdBitmapSplitBench(rounds = 7, ops = 100) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-nbd-bitmap-split-'));
  const outdir = path.join(import.meta.dirname, '..', 'dist', `.nbd-bitmap-split-${process.pid}`);
  const servers: ChildProcess[] = [];
  try {
    const image = path.join(dir, 'big.qcow2');
    makeImage(image);
    await buildCli(outdir);
    const socks = [path.join(dir, 'q.sock'), path.join(dir, 'o.sock')] as const;
    servers.push(spawn('qemu-nbd', ['-t', '-r', '-f', 'qcow2', '-B', 'b0', '-k', socks[0], image], { stdio: 'ignore' }));
    await listening(socks[0], servers[0]!);
    servers.push(spawn(process.execPath, [path.join(outdir, 'blocklayer.js'), 'serve', '-r', '-f', 'qcow2', '-B', 'b0', '-k', socks[1], image], { stdio: 'ignore' }));
    await listening(socks[1], servers[1]!);
    const pids = [servers[0]!.pid!, servers[1]!.pid!] as [number, number];
    const outs = [path.join(dir, 'q.map'), path.join(dir, 'o.map')] as const;
    // Warm both up as the map bench does: one map each.
    for (const side of [0, 1] as const) await mapOnce(socks[side], outs[side]);
    console.log(`nbd bitmap map, split: server CPU per operation, median of ${rounds} rounds (ratio above 1: ours uses less)`);
    const connect = await part(`(a) connect x${ops}`, rounds, ops, pids, (side) => async () => {
      const c = new RawClient(socks[side]);
      await c.handshake();
      await c.disconnect();
    });
    const clients = [new RawClient(socks[0]), new RawClient(socks[1])] as const;
    await Promise.all(clients.map((c) => c.handshake()));
    const walk = await part(`(b) whole disk x${ops}`, rounds, ops, pids, (side) => () => clients[side].wholeDisk());
    await Promise.all(clients.map((c) => c.disconnect()));
    const mapOps = Math.max(1, Math.round(ops / 4));
    const map = await part(`(c) nbdinfo --map x${mapOps}`, rounds, mapOps, pids, (side) => async () => {
      await mapOnce(socks[side], outs[side]);
    });
    console.log(`  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    return { connect, walk, map };
  } finally {
    for (const s of servers) s.kill('SIGTERM');
    fs.rmSync(outdir, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? Number(process.argv[i + 1]) : undefined;
  };
  await nbdBitmapSplitBench(arg('--rounds'), arg('--ops'));
}
