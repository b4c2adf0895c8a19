import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, type Drive, NbdServer, openImage } from '../../src/index.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { driveHash, ourMap, referenceMap, setQemuCwd } from '../helpers/qemu-images.js';
import { haveProgram } from '../helpers/tools.js';

const haveQemu = haveProgram('qemu-nbd') && haveProgram('qemu-img') && haveProgram('qemu-io');
const haveNbdkit = haveProgram('nbdkit');
if ((!haveQemu || !haveNbdkit) && process.env.CI === 'true') {
  throw new Error('qemu-nbd/qemu-img or nbdkit missing in CI: .ci/run must install qemu-utils and nbdkit');
}
if (!haveQemu) console.log('nbd client tests against qemu-nbd skipped: install qemu-utils (apt-get install qemu-utils) to run them');
if (!haveNbdkit) console.log('nbd client tests against nbdkit skipped: install nbdkit (apt-get install nbdkit) to run them');

const MiB = 1024 * 1024;
let dir: string;
const p = (name: string) => path.join(dir, name);
const layer = new BlockLayer();
const children: ChildProcess[] = [];

/** A TCP port nobody listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address() as net.AddressInfo;
      s.close(() => resolve(a.port));
    });
  });
}

/** Waits until something accepts connections at the address. */
async function waitListening(to: net.NetConnectOpts, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(to);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what} did not start listening`);
}

/** Starts a server process; it is killed by PID in afterAll (or by the test). */
function start(cmd: string, args: string[]): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(child);
  return child;
}

function stop(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    process.kill(child.pid as number, signal);
  });
}

/** Starts qemu-nbd serving `file` raw on a fresh TCP port; resolves with the port. */
async function qemuNbd(file: string, extra: string[] = []): Promise<number> {
  const port = await freePort();
  start('qemu-nbd', ['-f', 'raw', '-x', 'disk', '-b', '127.0.0.1', '-p', String(port), '--persistent', ...extra, file]);
  await waitListening({ host: '127.0.0.1', port }, 'qemu-nbd');
  return port;
}

const inet = (port: number) => ({ type: 'inet', host: '127.0.0.1', port });

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

/** Writes, reads back, flushes, discards and zeroes through a drive on an NBD export. */
async function exercise(d: Drive): Promise<void> {
  const a = pattern(256 * 1024, 1);
  const b = pattern(4096, 2);
  const c = pattern(1000, 3);
  await Promise.all([d.write(0, a), d.write(MiB, b), d.write(3 * MiB + 17, c)]);
  // Many reads in flight at once, matched by cookie.
  const reads = await Promise.all([
    d.read(0, a.length),
    d.read(MiB, b.length),
    d.read(3 * MiB + 17, c.length),
    ...Array.from({ length: 32 }, (_, i) => d.read(i * 4096, 4096)),
  ]);
  expect(Buffer.from(reads[0] as Uint8Array).equals(a)).toBe(true);
  expect(Buffer.from(reads[1] as Uint8Array).equals(b)).toBe(true);
  expect(Buffer.from(reads[2] as Uint8Array).equals(c)).toBe(true);
  for (let i = 0; i < 32; i++) expect(Buffer.from(reads[3 + i] as Uint8Array).equals(a.subarray(i * 4096, (i + 1) * 4096))).toBe(true);
  await d.flush();
  await d.writeZeroes(64 * 1024, 64 * 1024);
  const z = Buffer.from(await d.read(60 * 1024, 72 * 1024));
  expect(z.subarray(0, 4096).equals(a.subarray(60 * 1024, 64 * 1024))).toBe(true);
  expect(z.subarray(4096, 4096 + 64 * 1024).every((x) => x === 0)).toBe(true);
  expect(z.subarray(68 * 1024).equals(a.subarray(128 * 1024, 132 * 1024))).toBe(true);
  await d.discard(MiB, 4096);
  // One large read: many OFFSET_DATA / OFFSET_HOLE chunks (or one simple reply) fill one buffer.
  const big = Buffer.from(await d.read(0, 8 * MiB));
  expect(big.subarray(3 * MiB + 17, 3 * MiB + 17 + c.length).equals(c)).toBe(true);
  await d.flush();
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-nbd-client-'));
  setQemuCwd(dir);
});
afterAll(async () => {
  await layer.close();
  await Promise.all(children.map((c) => stop(c)));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!haveQemu)('the nbd driver against qemu-nbd', () => {
  it('writes, reads back, flushes, discards and zeroes over TCP; the file holds the same bytes', async () => {
    const file = p('rw.raw');
    fs.writeFileSync(file, Buffer.alloc(0));
    fs.truncateSync(file, 16 * MiB);
    const port = await qemuNbd(file);
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port), export: 'disk' });
    expect(d.length).toBe(16 * MiB);
    await exercise(d);
    const viaNbd = await driveHash(d);
    await d.close();
    expect(createHash('sha256').update(fs.readFileSync(file)).digest('hex')).toBe(viaNbd);
  });

  it('works over a unix socket (QEMU spelling: port as a string for inet, path for unix)', async () => {
    const file = p('unix.raw');
    fs.writeFileSync(file, pattern(MiB, 9));
    const sock = p('qemu.sock');
    start('qemu-nbd', ['-f', 'raw', '-x', 'disk', '-k', sock, '--persistent', file]);
    await waitListening({ path: sock }, 'qemu-nbd');
    const d = await layer.openDrive({ driver: 'nbd', server: { type: 'unix', path: sock }, export: 'disk' });
    expect(Buffer.from(await d.read(0, MiB)).equals(pattern(MiB, 9))).toBe(true);
    await d.close();
  });

  it('block status of a sparse file equals qemu-img map of that file', async () => {
    const file = p('sparse.raw');
    const fd = fs.openSync(file, 'w');
    fs.ftruncateSync(fd, 8 * MiB);
    fs.writeSync(fd, Buffer.alloc(64 * 1024, 1), 0, 64 * 1024, 0);
    fs.writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, MiB);
    fs.writeSync(fd, Buffer.alloc(MiB, 3), 0, MiB, 5 * MiB);
    fs.closeSync(fd);
    const port = await qemuNbd(file, ['-r']);
    const d = await layer.openDrive({ driver: 'nbd', server: { ...inet(port), port: String(port) }, export: 'disk', readOnly: true });
    expect(await ourMap(d)).toEqual(referenceMap(file));
    await d.close();
  });

  it('a qcow2 image served raw opens as qcow2 over nbd and reads the same bytes as the file', async () => {
    const img = p('image.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '4M'], { cwd: dir });
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 64k', '-c', 'write -P 0x11 1M 3k', '-c', 'write -z 2M 128k', img], {
      stdio: 'ignore',
    });
    const port = await qemuNbd(img, ['-r']);
    const remote = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'nbd', server: inet(port), export: 'disk' } });
    const local = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: img, locking: 'off' } });
    expect(remote.length).toBe(4 * MiB);
    expect(await driveHash(remote)).toBe(await driveHash(local));
    await remote.close();
    await local.close();
  });

  it('openImage takes nbd:// and nbd+unix:// URIs (raw by default, qcow2 when format says so)', async () => {
    const raw = p('uri.raw');
    fs.writeFileSync(raw, pattern(2 * MiB, 8));
    const port = await qemuNbd(raw);
    const d = await openImage(`nbd://127.0.0.1:${port}/disk`, {}, layer);
    expect(d.readOnly).toBe(false);
    expect(Buffer.from(await d.read(0, 2 * MiB)).equals(pattern(2 * MiB, 8))).toBe(true);
    await d.close();
    const img = p('uri.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '2M'], { cwd: dir });
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 4k 8k', img], { stdio: 'ignore' });
    const sock = p('uri.sock');
    start('qemu-nbd', ['-f', 'raw', '-x', 'q', '-k', sock, '-r', '--persistent', img]);
    await waitListening({ path: sock }, 'qemu-nbd');
    const q = await openImage(`nbd+unix:///q?socket=${encodeURIComponent(sock)}`, { format: 'qcow2' }, layer);
    const got = Buffer.from(await q.read(0, 16384));
    expect(got.subarray(4096, 12288).every((x) => x === 0x5a)).toBe(true);
    expect(got.subarray(0, 4096).every((x) => x === 0)).toBe(true);
    await q.close();
  });

  it('a read-only export refuses a read-write open with EROFS naming the export, and opens read-only', async () => {
    const file = p('ro.raw');
    fs.writeFileSync(file, pattern(64 * 1024, 4));
    const port = await qemuNbd(file, ['-r']);
    const err = await layer.openDrive({ driver: 'nbd', server: inet(port), export: 'disk' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockError);
    expect(err).toMatchObject({ code: 'EROFS', message: expect.stringContaining("'disk'") });
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port), export: 'disk', readOnly: true });
    expect(Buffer.from(await d.read(0, 64 * 1024)).equals(pattern(64 * 1024, 4))).toBe(true);
    await d.close();
  });

  it('an unknown export name is ENOENT naming the export', async () => {
    const file = p('named.raw');
    fs.writeFileSync(file, Buffer.alloc(4096));
    const port = await qemuNbd(file);
    await expect(layer.openDrive({ driver: 'nbd', server: inet(port), export: 'nope' })).rejects.toMatchObject({
      code: 'ENOENT',
      message: expect.stringContaining("'nope'"),
    });
  });
});

describe.skipIf(!haveNbdkit)('the nbd driver against nbdkit', () => {
  it('memory plugin over TCP: writes, reads back, flushes, discards and zeroes', async () => {
    const port = await freePort();
    start('nbdkit', ['-f', '-p', String(port), '-i', '127.0.0.1', 'memory', '64M']);
    await waitListening({ host: '127.0.0.1', port }, 'nbdkit');
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port) });
    expect(d.length).toBe(64 * MiB);
    await exercise(d);
    // nbdkit's memory plugin reports holes: a discarded or never-written range is a hole that reads as zeros.
    const far = await d.blockStatus(32 * MiB, MiB);
    expect(far).toMatchObject({ offset: 32 * MiB, data: false, zero: true });
    const written = await d.blockStatus(3 * MiB, 4096);
    expect(written.data).toBe(true);
    await d.close();
  });

  it('memory plugin over a unix socket', async () => {
    const sock = p('nbdkit.sock');
    start('nbdkit', ['-f', '-U', sock, 'memory', '64M']);
    await waitListening({ path: sock }, 'nbdkit');
    const d = await layer.openDrive({ driver: 'nbd', server: { type: 'unix', path: sock } });
    await d.write(5 * MiB, pattern(8192, 5));
    expect(Buffer.from(await d.read(5 * MiB, 8192)).equals(pattern(8192, 5))).toBe(true);
    await d.close();
  });

  it('a server killed with requests in flight rejects them all with EIO, and later requests at once', async () => {
    const port = await freePort();
    const child = start('nbdkit', ['-f', '-p', String(port), '-i', '127.0.0.1', '--filter=delay', 'memory', '64M', 'delay-read=5']);
    await waitListening({ host: '127.0.0.1', port }, 'nbdkit');
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port) });
    const inFlight = [d.read(0, 4096), d.read(MiB, 4096), d.read(2 * MiB, 4096)].map((r) => r.catch((e: unknown) => e));
    await new Promise((r) => setTimeout(r, 200));
    await stop(child, 'SIGKILL');
    for (const e of await Promise.all(inFlight)) expect(e).toMatchObject({ code: 'EIO' });
    await expect(d.read(0, 4096)).rejects.toMatchObject({ code: 'EIO' });
    await expect(d.write(0, Buffer.alloc(4096))).rejects.toMatchObject({ code: 'EIO' });
    await d.close().catch(() => undefined);
  });

  it('without structured replies (nbdkit --no-sr): simple replies carry reads, and block status says data everywhere', async () => {
    const port = await freePort();
    start('nbdkit', ['-f', '--no-sr', '-p', String(port), '-i', '127.0.0.1', 'memory', '16M']);
    await waitListening({ host: '127.0.0.1', port }, 'nbdkit');
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port) });
    await exercise(d);
    expect(await d.blockStatus(12 * MiB, MiB)).toMatchObject({ offset: 12 * MiB, length: MiB, data: true, zero: false });
    await d.close();
  });

  it('a server error on a write maps back to its BlockError code (ENOSPC), and reads still work', async () => {
    const port = await freePort();
    const args = ['-f', '-p', String(port), '-i', '127.0.0.1', '--filter=error', 'memory', '8M', 'error=ENOSPC', 'error-pwrite-rate=100%'];
    start('nbdkit', args);
    await waitListening({ host: '127.0.0.1', port }, 'nbdkit');
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port), werror: 'report' });
    await expect(d.write(4096, Buffer.alloc(4096, 1))).rejects.toMatchObject({ code: 'ENOSPC', offset: 4096 });
    expect(Buffer.from(await d.read(0, 8192)).every((x) => x === 0)).toBe(true);
    await d.close();
  });

  it('an export without write-zeroes support falls back to writing zero buffers', async () => {
    const port = await freePort();
    start('nbdkit', ['-f', '-p', String(port), '-i', '127.0.0.1', '--filter=nozero', 'memory', '8M']);
    await waitListening({ host: '127.0.0.1', port }, 'nbdkit');
    const d = await layer.openDrive({ driver: 'nbd', server: inet(port) });
    await d.write(0, pattern(64 * 1024, 6));
    await d.writeZeroes(4096, 8192);
    const r = Buffer.from(await d.read(0, 16 * 1024));
    expect(r.subarray(4096, 12288).every((x) => x === 0)).toBe(true);
    expect(r.subarray(0, 4096).equals(pattern(64 * 1024, 6).subarray(0, 4096))).toBe(true);
    await d.close();
  });
});

describe('the nbd driver against our own NbdServer', () => {
  it('round trip through an in-process server with a memory drive', async () => {
    const backing = await layer.openDrive({ driver: 'memory', size: 8 * MiB });
    const server = new NbdServer({ exports: [{ name: 'mem', drive: backing }] });
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    try {
      const d = await layer.openDrive({ driver: 'nbd', server: inet(a.port), export: 'mem' });
      expect(d.length).toBe(8 * MiB);
      await exercise(d);
      // The bytes landed in the served drive.
      expect(Buffer.from(await backing.read(3 * MiB + 17, 1000)).equals(pattern(1000, 3))).toBe(true);
      expect(await d.blockStatus(6 * MiB, MiB)).toMatchObject({ data: false, zero: true });
      await d.close();
    } finally {
      await server.close();
      await backing.close();
    }
  });

  it('connection refused is a rejected BlockError naming host:port', async () => {
    const port = await freePort();
    const err = await layer.openDrive({ driver: 'nbd', server: inet(port) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockError);
    expect(err).toMatchObject({ code: 'ENXIO', message: expect.stringContaining(`127.0.0.1:${port}`) });
  });

  it('bad options name the field', async () => {
    await expect(layer.openDrive({ driver: 'nbd', server: { type: 'inet', host: '127.0.0.1', port: 70000 } })).rejects.toMatchObject({
      code: 'EINVAL',
    });
    await expect(layer.openDrive({ driver: 'nbd', server: { type: 'tcp', host: 'x' } })).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

/**
 * A minimal hand-written server: negotiates (structured replies only if `structured`, never a
 * meta context), then answers each request with `answer` (which may break the protocol).
 */
async function fakeServer(answer: (socket: net.Socket, request: P.NbdRequest) => void, structured = false): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    let buf = Buffer.alloc(0);
    let phase: 'flags' | 'options' | 'transmission' = 'flags';
    socket.write(P.encodeServerGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES));
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (phase === 'flags') {
          if (buf.length < 4) return;
          buf = buf.subarray(4);
          phase = 'options';
        } else if (phase === 'options') {
          if (buf.length < P.OPTION_HEADER_SIZE) return;
          const h = P.decodeOptionHeader(buf);
          if (buf.length < P.OPTION_HEADER_SIZE + h.length) return;
          buf = buf.subarray(P.OPTION_HEADER_SIZE + h.length);
          if (h.option === P.NBD_OPT_STRUCTURED_REPLY && structured) socket.write(P.encodeOptionReply(h.option, P.NBD_REP_ACK));
          else if (h.option !== P.NBD_OPT_GO) socket.write(P.encodeOptionReply(h.option, P.NBD_REP_ERR_UNSUP));
          else {
            const flags = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_TRIM;
            socket.write(P.encodeOptionReply(h.option, P.NBD_REP_INFO, P.encodeInfoExport(MiB, flags)));
            socket.write(P.encodeOptionReply(h.option, P.NBD_REP_ACK));
            phase = 'transmission';
          }
        } else {
          if (buf.length < P.REQUEST_SIZE) return;
          const r = P.decodeRequest(buf);
          const size = P.REQUEST_SIZE + (r.type === P.NBD_CMD_WRITE ? r.length : 0);
          if (buf.length < size) return;
          buf = buf.subarray(size);
          if (r.type === P.NBD_CMD_DISC) return void socket.end();
          answer(socket, r);
        }
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe('the nbd driver against a misbehaving server', () => {
  it('a reply with an unknown cookie breaks the connection: every request in flight fails with EIO, later ones at once', async () => {
    const held: P.NbdRequest[] = [];
    const fake = await fakeServer((socket, r) => {
      held.push(r);
      // Answer the third request with a cookie nobody sent.
      if (held.length === 3) socket.write(P.encodeSimpleReply(r.cookie + 1000n, 0));
    });
    try {
      const d = await layer.openDrive({ driver: 'nbd', server: inet(fake.port) });
      const results = await Promise.all([d.read(0, 512), d.read(512, 512), d.read(1024, 512)].map((r) => r.catch((e: unknown) => e)));
      for (const e of results) expect(e).toMatchObject({ code: 'EIO', message: expect.stringContaining('unknown cookie') });
      await expect(d.flush()).rejects.toMatchObject({ code: 'EIO' });
      await d.close().catch(() => undefined);
    } finally {
      fake.close();
    }
  });

  it('simple replies settle requests out of order, matched by cookie; a simple error reply maps its code', async () => {
    const held: P.NbdRequest[] = [];
    const fake = await fakeServer((socket, r) => {
      if (r.type === P.NBD_CMD_FLUSH) return void socket.write(P.encodeSimpleReply(r.cookie, P.NBD_EINVAL));
      held.push(r);
      if (held.length < 2) return;
      // Answer the second read first, then the first.
      for (const h of held.reverse()) socket.write(Buffer.concat([P.encodeSimpleReply(h.cookie, 0), Buffer.alloc(h.length, h.offset / 512 + 1)]));
    });
    try {
      const d = await layer.openDrive({ driver: 'nbd', server: inet(fake.port), werror: 'report' });
      const [a, b] = await Promise.all([d.read(0, 512), d.read(512, 512)]);
      expect(Buffer.from(a).every((x) => x === 1)).toBe(true);
      expect(Buffer.from(b).every((x) => x === 2)).toBe(true);
      await expect(d.flush()).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('FLUSH') });
      await d.close();
    } finally {
      fake.close();
    }
  });
});

describe('the nbd driver against a server sending structured replies of its own making', () => {
  it('a read assembled from OFFSET_DATA chunks out of order and an OFFSET_HOLE fills the buffer', async () => {
    const fake = await fakeServer((socket, r) => {
      if (r.type !== P.NBD_CMD_READ) return void socket.write(P.encodeSimpleReply(r.cookie, 0));
      const half = r.length / 2;
      const quarter = r.length / 4;
      socket.write(Buffer.concat([P.encodeOffsetDataHeader(r.cookie, 0, r.offset + half, quarter), Buffer.alloc(quarter, 0xbb)]));
      socket.write(Buffer.concat([P.encodeOffsetDataHeader(r.cookie, 0, r.offset, half), Buffer.alloc(half, 0xaa)]));
      socket.write(P.encodeOffsetHole(r.cookie, P.NBD_REPLY_FLAG_DONE, r.offset + half + quarter, quarter));
    }, true);
    try {
      const d = await layer.openDrive({ driver: 'nbd', server: inet(fake.port) });
      const got = Buffer.from(await d.read(4096, 4096));
      expect(got.subarray(0, 2048).every((x) => x === 0xaa)).toBe(true);
      expect(got.subarray(2048, 3072).every((x) => x === 0xbb)).toBe(true);
      expect(got.subarray(3072).every((x) => x === 0)).toBe(true);
      await d.close();
    } finally {
      fake.close();
    }
  });

  it('an ERROR chunk fails its request with the mapped code (EPERM on a trim is EROFS) and carries the message', async () => {
    const fake = await fakeServer((socket, r) => {
      if (r.type === P.NBD_CMD_TRIM) return void socket.write(P.encodeErrorChunk(r.cookie, P.NBD_REPLY_FLAG_DONE, P.NBD_EPERM, 'no trims today'));
      if (r.type === P.NBD_CMD_READ) return void socket.write(P.encodeErrorChunk(r.cookie, P.NBD_REPLY_FLAG_DONE, P.NBD_EPERM, 'keep out', r.offset));
      socket.write(P.encodeSimpleReply(r.cookie, 0));
    }, true);
    try {
      const d = await layer.openDrive({ driver: 'nbd', server: inet(fake.port), werror: 'report', rerror: 'report' });
      await expect(d.discard(0, 4096)).rejects.toMatchObject({ code: 'EROFS', message: expect.stringContaining('no trims today') });
      await expect(d.read(0, 512)).rejects.toMatchObject({ code: 'EACCES', message: expect.stringContaining('keep out') });
      // The connection survives a request's error.
      await d.flush();
      await d.close();
    } finally {
      fake.close();
    }
  });

  it('a read whose chunks leave part of the range uncovered fails with EIO instead of returning stale bytes', async () => {
    const fake = await fakeServer((socket, r) => {
      if (r.type !== P.NBD_CMD_READ) return void socket.write(P.encodeSimpleReply(r.cookie, 0));
      socket.write(Buffer.concat([P.encodeOffsetDataHeader(r.cookie, P.NBD_REPLY_FLAG_DONE, r.offset, r.length / 2), Buffer.alloc(r.length / 2, 1)]));
    }, true);
    try {
      const d = await layer.openDrive({ driver: 'nbd', server: inet(fake.port), rerror: 'report' });
      await expect(d.read(0, 1024)).rejects.toMatchObject({ code: 'EIO', message: expect.stringContaining('covered 512 bytes') });
      await d.close();
    } finally {
      fake.close();
    }
  });

  it('a data chunk outside its request is a protocol error: the request fails with EIO', async () => {
    const fake = await fakeServer((socket, r) => {
      if (r.type !== P.NBD_CMD_READ) return void socket.write(P.encodeSimpleReply(r.cookie, 0));
      socket.write(Buffer.concat([P.encodeOffsetDataHeader(r.cookie, P.NBD_REPLY_FLAG_DONE, r.offset + r.length, 512), Buffer.alloc(512)]));
    }, true);
    try {
      const d = await layer.openDrive({ driver: 'nbd', server: inet(fake.port) });
      await expect(d.read(0, 512)).rejects.toMatchObject({ code: 'EIO', message: expect.stringContaining('outside the request') });
      await d.close().catch(() => undefined);
    } finally {
      fake.close();
    }
  });
});
