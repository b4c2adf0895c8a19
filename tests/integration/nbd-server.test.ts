import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, type NbdClientInfo, NbdServer } from '../../src/index.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { NbdExportManager } from '../../src/qmp/exports.js';
import { RawNbdClient } from '../helpers/nbd-raw-client.js';
import { driveHash, haveQemuTools } from '../helpers/qemu-images.js';
import { haveProgram, ok, run } from '../helpers/tools.js';

const CI = process.env.CI === 'true';
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const haveQemu = haveQemuTools();
const haveLibnbd = haveProgram('nbdinfo') && haveProgram('nbdcopy');
const haveFio = haveProgram('fio');
/** The NBD project's test client: ../shared/tools/nbd-tester/ beside the repository (NBD_TESTER_DIR overrides). */
const testerDir = process.env.NBD_TESTER_DIR ?? path.resolve(repoRoot, '../shared/tools/nbd-tester');
const tester = path.join(testerDir, 'nbd-tester-client');
const haveTester = fs.existsSync(tester);

if (CI && !haveQemu) throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (CI && !haveLibnbd) throw new Error('nbdinfo/nbdcopy missing in CI: .ci/run must install libnbd-bin');
if (CI && !haveFio) throw new Error('fio missing in CI: .ci/run must install fio');
if (CI && !haveTester) throw new Error(`nbd-tester-client missing in CI: expected at ${tester} (../shared/tools/nbd-tester/ beside the repository, or NBD_TESTER_DIR)`);
if (!haveQemu) console.log('NBD server tests with qemu-img/qemu-io skipped: install qemu-utils (apt-get install qemu-utils) to run them');
if (!haveLibnbd) console.log('NBD server tests with nbdinfo/nbdcopy skipped: install libnbd-bin (apt-get install libnbd-bin) to run them');
if (!haveFio) console.log('NBD server test with fio skipped: install fio (apt-get install fio) to run it');
if (!haveTester) console.log(`NBD server tests with nbd-tester-client skipped: not found at ${tester} (set NBD_TESTER_DIR)`);

const MiB = 1024 * 1024;
let dir: string;
const layer = new BlockLayer();

/** A memory drive with a recognisable pattern in a few places (and holes elsewhere). */
async function patterned(size: number, id?: string): Promise<Drive> {
  const d = await layer.openDrive({ driver: 'memory', size, ...(id ? { id } : {}) });
  for (let o = 0, i = 1; o < size; o += 768 * 1024, i++) {
    const b = Buffer.alloc(Math.min(100_000, size - o));
    for (let k = 0; k < b.byteLength; k++) b[k] = (k * 7 + i * 13) & 0xff;
    await d.write(o, b);
  }
  return d;
}

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Adjacent extents with the same flags made one, so two maps compare regardless of how they were split. */
function merge(extents: { offset: number; length: number; flags: number }[]) {
  const out: { offset: number; length: number; flags: number }[] = [];
  for (const e of extents) {
    const last = out[out.length - 1];
    if (last && last.flags === e.flags && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ ...e });
  }
  return out;
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-nbd-'));
});
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!haveQemu && !haveLibnbd && !haveFio)('real NBD clients against NbdServer', () => {
  let server: NbdServer;
  let port: number;
  const drives: Record<string, Drive> = {};
  const uri = (name: string) => `nbd://127.0.0.1:${port}/${name}`;

  beforeAll(async () => {
    drives.disk = await patterned(8 * MiB);
    drives.rw = await patterned(8 * MiB);
    drives.src = await patterned(16 * MiB);
    drives.dst = await layer.openDrive({ driver: 'memory', size: 16 * MiB });
    drives.fio = await layer.openDrive({ driver: 'memory', size: 16 * MiB });
    drives.ro = await patterned(1 * MiB);
    drives.throttled = await layer.openDrive({ driver: 'memory', size: 1 * MiB, throttle: { iopsTotal: 100 } });
    drives.faulty = await layer.openDrive({
      driver: 'blkdebug',
      rules: [
        { event: 'read', code: 'EIO', offset: 0 },
        { event: 'write', code: 'ENOSPC', offset: 65536 },
      ],
      file: { driver: 'memory', size: 1 * MiB },
    });
    // A sparse file: data at 0–64 KiB, 1 MiB–+4 KiB and 5–6 MiB, holes elsewhere.
    const sparse = path.join(dir, 'sparse.raw');
    const fd = fs.openSync(sparse, 'w');
    fs.ftruncateSync(fd, 8 * MiB);
    fs.writeSync(fd, Buffer.alloc(64 * 1024, 1), 0, 64 * 1024, 0);
    fs.writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, MiB);
    fs.writeSync(fd, Buffer.alloc(MiB, 3), 0, MiB, 5 * MiB);
    fs.closeSync(fd);
    drives.sparse = await layer.openDrive({ driver: 'file', filename: sparse, readOnly: true });
    server = new NbdServer({
      exports: [
        { name: 'disk', drive: drives.disk, description: 'the test disk' },
        { name: 'rw', drive: drives.rw },
        { name: 'src', drive: drives.src },
        { name: 'dst', drive: drives.dst },
        { name: 'ro', drive: drives.ro, readOnly: true },
        { name: 'throttled', drive: drives.throttled },
        { name: 'sparse', drive: drives.sparse },
        { name: 'faulty', drive: drives.faulty },
        { name: 'fio', drive: drives.fio },
      ],
    });
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    port = a.port;
  });
  afterAll(async () => {
    await server?.close();
  });

  it.skipIf(!haveQemu)('qemu-img info sees the export size over --image-opts and an nbd:// URI', async () => {
    const opts = await ok('qemu-img', ['info', '--output=json', '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=disk`]);
    expect(JSON.parse(opts)['virtual-size']).toBe(8 * MiB);
    const byUri = await ok('qemu-img', ['info', '--output=json', '-f', 'raw', uri('disk')]);
    expect(JSON.parse(byUri)['virtual-size']).toBe(8 * MiB);
  });

  it.skipIf(!haveQemu)('qemu-img convert from the export is byte-identical to the drive', async () => {
    const out = path.join(dir, 'convert.raw');
    await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri('disk'), out]);
    expect(sha(fs.readFileSync(out))).toBe(await driveHash(drives.disk));
  });

  it.skipIf(!haveQemu)('qemu-io write, aio_write+aio_flush, write -z, discard and a FUA write land on the drive', async () => {
    const flushesBefore = drives.rw.stats().flushOperations;
    await ok('qemu-io', [
      '-f', 'raw',
      '-c', 'write -P 0xab 0 64k',
      '-c', 'read -P 0xab 0 64k',
      '-c', 'aio_write -P 0xcd 1M 64k',
      '-c', 'aio_flush',
      '-c', 'write -z 2M 64k',
      '-c', 'discard 3M 64k',
      '-c', 'write -f -P 0x77 4M 4k',
      uri('rw'),
    ]);
    const all = (b: Uint8Array, v: number) => b.every((x) => x === v);
    expect(all(await drives.rw.read(0, 64 * 1024), 0xab)).toBe(true);
    expect(all(await drives.rw.read(MiB, 64 * 1024), 0xcd)).toBe(true);
    // 2 MiB and 3 MiB held the seed pattern (written at multiples of 768 KiB): now zeros.
    expect(all(await drives.rw.read(2 * MiB, 64 * 1024), 0)).toBe(true);
    expect(all(await drives.rw.read(3 * MiB, 64 * 1024), 0)).toBe(true);
    expect(all(await drives.rw.read(4 * MiB, 4096), 0x77)).toBe(true);
    // aio_flush, the FUA write and the close each flushed the drive.
    expect(drives.rw.stats().flushOperations - flushesBefore).toBeGreaterThanOrEqual(2);
  });

  it.skipIf(!haveQemu)('a read-only export refuses qemu-io writes and still serves reads', async () => {
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', uri('ro')]);
    expect(`${r.stdout}${r.stderr}`).toMatch(/Operation not permitted|read-only|Read-only|Permission denied/);
    expect(sha(await drives.ro.read(0, 4096))).not.toBe(sha(Buffer.alloc(4096, 1)));
    const out = path.join(dir, 'ro.raw');
    await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri('ro'), out]);
    expect(sha(fs.readFileSync(out))).toBe(await driveHash(drives.ro));
  });

  it.skipIf(!haveQemu)("a throttled export slows a client's I/O (iops 100: 60 reads take at least 0.4 s)", async () => {
    const cmds = Array.from({ length: 60 }, (_, i) => ['-c', `read ${i * 4}k 4k`]).flat();
    const before = drives.throttled.stats().rdOperations;
    const t0 = performance.now();
    await ok('qemu-io', ['-f', 'raw', ...cmds, uri('throttled')]);
    const elapsed = performance.now() - t0;
    expect(drives.throttled.stats().rdOperations - before).toBe(60);
    // A burst of at most 11 (QEMU's default bucket: a tenth of the rate) goes at once, the other 49 or more at 100 per second.
    expect(elapsed).toBeGreaterThanOrEqual(400);
  });

  it.skipIf(!haveQemu)("drive errors reach qemu-io as their errno (structured error chunks): EIO on read, ENOSPC on write", async () => {
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', '-c', 'read 128k 4k', uri('faulty')]);
    expect(r.stdout + r.stderr).toMatch(/read failed: Input\/output error/);
    expect(r.stdout).toMatch(/read 4096\/4096 bytes at offset 131072/);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write 64k 4k', uri('faulty')]);
    expect(w.stdout + w.stderr).toMatch(/write failed: No space left on device/);
  });

  it.skipIf(!haveQemu)("qemu-img map over NBD (QEMU's client reads base:allocation) matches the drive's map", async () => {
    const theirs = JSON.parse(await ok('qemu-img', ['map', '--output=json', '-f', 'raw', uri('sparse')])) as { start: number; length: number; data: boolean; zero: boolean }[];
    const got = merge(theirs.map((e) => ({ offset: e.start, length: e.length, flags: P.allocationFlags(e) })));
    const ours = merge((await drives.sparse.blockStatusMap()).map((e) => ({ offset: e.offset, length: e.length, flags: P.allocationFlags(e) })));
    expect(got).toEqual(ours);
    expect(got.length).toBeGreaterThan(2);
  });

  it.skipIf(!haveFio)("fio's nbd engine: random writes at queue depth 16, every block read back and verified", async () => {
    const out = await ok('fio', [
      '--name=nbdverify',
      '--ioengine=nbd',
      `--uri=${uri('fio')}`,
      '--rw=randwrite',
      '--bs=4k',
      '--size=16M',
      '--iodepth=16',
      '--verify=crc32c',
      '--verify_fatal=1',
      '--verify_state_save=0',
      '--output-format=json',
    ]);
    const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] }).jobs[0];
    expect(job).toMatchObject({ error: 0, write: { io_bytes: 16 * MiB }, read: { io_bytes: 16 * MiB } });
    expect(drives.fio.stats().wrOperations).toBe(4096);
  });

  it.skipIf(!haveLibnbd)('nbdinfo --list shows every export with its description', async () => {
    const out = JSON.parse(await ok('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${port}`])) as { exports: { 'export-name': string; description?: string }[] };
    const names = out.exports.map((e) => e['export-name']).sort();
    expect(names).toEqual(['disk', 'dst', 'faulty', 'fio', 'ro', 'rw', 'sparse', 'src', 'throttled']);
    expect(out.exports.find((e) => e['export-name'] === 'disk')?.description).toBe('the test disk');
  });

  it.skipIf(!haveLibnbd)('nbdinfo shows the flags: read-only, multi-conn, fast zero, block sizes', async () => {
    const info = JSON.parse(await ok('nbdinfo', ['--json', uri('rw')])) as { exports: Record<string, unknown>[] };
    const e = info.exports[0] as Record<string, unknown>;
    expect(e).toMatchObject({
      'export-size': 8 * MiB,
      is_read_only: false,
      can_multi_conn: true,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_fast_zero: true,
      can_cache: true,
      block_size_minimum: 1,
      block_size_preferred: 4096,
      block_size_maximum: 32 * MiB,
    });
    expect(e.contexts).toEqual(['base:allocation']);
    const ro = JSON.parse(await ok('nbdinfo', ['--json', uri('ro')])) as { exports: Record<string, unknown>[] };
    expect(ro.exports[0]).toMatchObject({ is_read_only: true, can_trim: false, can_zero: false });
  });

  it.skipIf(!haveLibnbd)("nbdinfo --map of a sparse file equals the drive's blockStatusMap", async () => {
    const theirs = JSON.parse(await ok('nbdinfo', ['--map', '--json', uri('sparse')])) as { offset: number; length: number; type: number }[];
    const ours = (await drives.sparse.blockStatusMap()).map((e) => ({ offset: e.offset, length: e.length, flags: P.allocationFlags(e) }));
    const got = merge(theirs.map((e) => ({ offset: e.offset, length: e.length, flags: e.type })));
    expect(got).toEqual(merge(ours));
    // The file's holes really are reported as holes (the comparison is not between two empty maps).
    expect(got.some((e) => e.flags === (P.NBD_STATE_HOLE | P.NBD_STATE_ZERO))).toBe(true);
    expect(got.some((e) => e.flags === 0)).toBe(true);
  });

  it.skipIf(!haveLibnbd)('nbdcopy round trip with 4 connections: export → file → another export', async () => {
    const file = path.join(dir, 'copy.raw');
    await ok('nbdcopy', ['--connections=4', uri('src'), file]);
    expect(sha(fs.readFileSync(file))).toBe(await driveHash(drives.src));
    await ok('nbdcopy', ['--connections=4', '--flush', file, uri('dst')]);
    expect(await driveHash(drives.dst)).toBe(await driveHash(drives.src));
  });
});

describe.skipIf(!haveTester)("the NBD project's nbd-tester-client", () => {
  let server: NbdServer;
  let port: number;
  let current: Drive | null = null;

  beforeAll(async () => {
    // The huge integrity trace sends requests of up to ~48 MiB: more than QEMU's 32 MiB default.
    server = new NbdServer({ maxRequest: 64 * MiB });
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    port = a.port;
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A fresh 50 MiB export1 (zeros), as the NBD project's own test runs use. */
  async function freshExport(readOnly = false): Promise<void> {
    if (current) {
      await server.removeExport('export1');
      await current.close();
    }
    current = await layer.openDrive({ driver: 'memory', size: 50 * MiB });
    server.addExport({ name: 'export1', drive: current, readOnly });
  }

  const cases: [string, string[], boolean?][] = [
    ['handshake (unknown option → ERR_UNSUP, then ABORT)', ['-h']],
    ['read throughput', []],
    ['write throughput', ['-w']],
    ['write with flushes and FUA writes', ['-w', '-f']],
    ['write to a read-only export fails with an error (-F: expect an error)', ['-w', '-F'], true],
    ['oversized requests', ['-o']],
    ['integrity trace', ['-i', '-t', path.join(testerDir, 'integrity-test.tr')]],
    ['huge integrity trace', ['-i', '-t', path.join(testerDir, 'integrityhuge-test.tr')]],
  ];
  for (const [name, args, readOnly] of cases) {
    it(name, { timeout: 180_000 }, async () => {
      await freshExport(readOnly === true);
      // Its stdout is a progress line per few requests: not collected (draining it here would slow the server under test).
      const r = await run(tester, ['-N', 'export1', ...args, '127.0.0.1', String(port)], 170_000, 'ignore');
      expect(r.code, r.stderr.slice(-1500)).toBe(0);
    });
  }
});

describe('hostile and misbehaving clients', () => {
  let server: NbdServer;
  let port: number;
  let drive: Drive;
  const errors: string[] = [];
  const disconnects: (string | undefined)[] = [];
  const connects: NbdClientInfo[] = [];

  beforeAll(async () => {
    drive = await patterned(1 * MiB);
    const ro = await patterned(64 * 1024);
    server = new NbdServer({ exports: [{ name: 'd', drive }, { name: 'ro', drive: ro, readOnly: true }], maxConnections: 4, handshakeTimeoutMs: 300, maxRequest: 1 * MiB });
    server.on('error', (e) => errors.push(e.error.message));
    server.on('disconnect', (c) => disconnects.push(c.reason));
    server.on('connect', (c) => connects.push(c));
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    port = a.port;
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A well-behaved client reads 4 KiB at 0 and gets the drive's bytes. */
  async function checkGoodClient(c: RawNbdClient, cookie: bigint): Promise<void> {
    c.request(P.NBD_CMD_READ, 0, 4096, cookie);
    const r = await c.simpleReply(4096);
    expect(r).toMatchObject({ error: 0, cookie });
    expect(sha(r.data)).toBe(sha(await drive.read(0, 4096)));
  }

  it('a bad option magic disconnects that client; a connected client carries on', async () => {
    const good = await RawNbdClient.connect(port);
    await good.handshake('d');
    const bad = await RawNbdClient.connect(port);
    await bad.read(P.SERVER_GREETING_SIZE);
    bad.write(Buffer.from([0, 0, 0, 1]));
    bad.write(Buffer.alloc(16, 0x41));
    await bad.closed;
    await checkGoodClient(good, 1n);
    // Only the client that finished its handshake was announced, with its address and export.
    expect(connects).toEqual([{ address: '127.0.0.1', port: good.socket.localPort, export: 'd' }]);
    good.destroy();
  });

  it('a bad request magic in transmission disconnects; others are unaffected', async () => {
    const good = await RawNbdClient.connect(port);
    await good.handshake('d');
    const bad = await RawNbdClient.connect(port);
    await bad.handshake('d');
    bad.write(Buffer.alloc(P.REQUEST_SIZE, 0x55));
    await bad.closed;
    await checkGoodClient(good, 2n);
    good.destroy();
  });

  it('an unknown command gets EINVAL and the connection stays usable; no payload is read for it (as qemu-nbd)', async () => {
    const c = await RawNbdClient.connect(port);
    await c.handshake('d');
    const errorsBefore = errors.length;
    // Each unknown request is followed at once by a READ: were its length taken for a payload, the READ would be eaten.
    for (const [type, flags, length, cookie] of [
      [0x1234, 0, 0, 3n],
      [P.NBD_CMD_RESIZE, 0, 512, 4n],
      [0xffff, P.NBD_CMD_FLAG_FUA, 4096, 5n],
    ] as const) {
      c.write(Buffer.concat([P.encodeRequest({ type, flags, cookie, offset: 0, length }), P.encodeRequest({ type: P.NBD_CMD_READ, flags: 0, cookie: cookie + 100n, offset: 0, length: 4096 })]));
      expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EINVAL, cookie });
      const r = await c.simpleReply(4096);
      expect(r).toMatchObject({ error: 0, cookie: cookie + 100n });
      expect(sha(r.data)).toBe(sha(await drive.read(0, 4096)));
    }
    expect(c.isClosed).toBe(false);
    expect(errors.length).toBe(errorsBefore);
    await checkGoodClient(c, 6n);
    c.destroy();
  });

  it('an unknown command with structured replies: an ERROR chunk with EINVAL that names it', async () => {
    const c = await RawNbdClient.connect(port);
    await c.structuredGo('d');
    c.request(0x4321, 0, 16, 7n);
    const [chunk, ...more] = await c.structuredReply();
    expect(more).toEqual([]);
    expect(chunk).toMatchObject({ type: P.NBD_REPLY_TYPE_ERROR, cookie: 7n });
    expect(P.decodeErrorChunk(P.NBD_REPLY_TYPE_ERROR, (chunk as { payload: Buffer }).payload)).toEqual({ error: P.NBD_EINVAL, message: 'unknown command 17185' });
    c.request(P.NBD_CMD_READ, 0, 512, 8n);
    const [data] = await c.structuredReply();
    expect(data).toMatchObject({ type: P.NBD_REPLY_TYPE_OFFSET_DATA, cookie: 8n });
    c.destroy();
  });

  it('a WRITE longer than maxRequest disconnects without waiting for its payload', async () => {
    const c = await RawNbdClient.connect(port);
    await c.handshake('d');
    c.request(P.NBD_CMD_WRITE, 0, 0xffffffff, 4n);
    await c.closed;
    expect(errors.some((m) => /exceeds the maximum/.test(m))).toBe(true);
  });

  it('a READ longer than maxRequest gets EINVAL and the connection stays usable', async () => {
    const c = await RawNbdClient.connect(port);
    await c.handshake('d');
    c.request(P.NBD_CMD_READ, 0, 2 * MiB, 5n);
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EINVAL, cookie: 5n });
    await checkGoodClient(c, 6n);
    c.destroy();
  });

  it('requests past the end: READ gets EINVAL, WRITE gets ENOSPC (its payload consumed)', async () => {
    const c = await RawNbdClient.connect(port);
    await c.handshake('d');
    c.request(P.NBD_CMD_READ, MiB - 512, 1024, 7n);
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EINVAL, cookie: 7n });
    c.request(P.NBD_CMD_WRITE, MiB - 512, 1024, 8n, 0, Buffer.alloc(1024, 9));
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_ENOSPC, cookie: 8n });
    c.request(P.NBD_CMD_READ, 2 ** 60, 1, 9n);
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EINVAL, cookie: 9n });
    await checkGoodClient(c, 10n);
    c.destroy();
  });

  it('a read-only export refuses WRITE, TRIM and WRITE_ZEROES with EPERM', async () => {
    const c = await RawNbdClient.connect(port);
    const { flags } = await c.handshake('ro');
    expect(flags & P.NBD_FLAG_READ_ONLY).toBe(P.NBD_FLAG_READ_ONLY);
    c.request(P.NBD_CMD_WRITE, 0, 512, 11n, 0, Buffer.alloc(512, 1));
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EPERM, cookie: 11n });
    c.request(P.NBD_CMD_TRIM, 0, 512, 12n);
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EPERM, cookie: 12n });
    c.request(P.NBD_CMD_WRITE_ZEROES, 0, 512, 13n);
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EPERM, cookie: 13n });
    c.destroy();
  });

  it('BLOCK_STATUS without a negotiated context is EINVAL; FAST_ZERO over data is ENOTSUP', async () => {
    const c = await RawNbdClient.connect(port);
    await c.handshake('d');
    c.request(P.NBD_CMD_BLOCK_STATUS, 0, 4096, 14n);
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EINVAL, cookie: 14n });
    c.request(P.NBD_CMD_WRITE_ZEROES, 0, 4096, 15n, P.NBD_CMD_FLAG_FAST_ZERO);
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_ENOTSUP, cookie: 15n });
    c.request(P.NBD_CMD_READ, 0, 16, 16n, P.NBD_CMD_FLAG_DF);
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EINVAL, cookie: 16n });
    c.destroy();
  });

  it('NBD_CMD_DISC: requests sent before it are answered, then the server closes', async () => {
    const c = await RawNbdClient.connect(port);
    await c.handshake('d');
    c.request(P.NBD_CMD_READ, 0, 64 * 1024, 17n);
    c.request(P.NBD_CMD_READ, 64 * 1024, 64 * 1024, 18n);
    c.request(P.NBD_CMD_DISC, 0, 0, 19n);
    const a = await c.simpleReply(64 * 1024);
    const b = await c.simpleReply(64 * 1024);
    expect([a.cookie, b.cookie].sort()).toEqual([17n, 18n]);
    await c.closed;
    expect(c.pending).toBe(0);
  });

  it('a client silent during the handshake is disconnected after handshakeTimeoutMs', async () => {
    const c = await RawNbdClient.connect(port);
    await c.read(P.SERVER_GREETING_SIZE);
    const t0 = performance.now();
    await c.closed;
    expect(performance.now() - t0).toBeLessThan(5000);
    // The server's own 'close' may come a moment after the client saw the connection end.
    const timedOut = () => disconnects.some((r) => r !== undefined && /handshake not finished within 300 ms/.test(r));
    for (let i = 0; i < 100 && !timedOut(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(timedOut()).toBe(true);
  });

  it('NBD_OPT_EXPORT_NAME with an unknown name ends the connection (the option has no error reply)', async () => {
    const c = await RawNbdClient.connect(port);
    await expect(c.handshake('nope')).rejects.toThrow(/closed/);
  });

  it('simple replies carry drive errors too (no structured replies negotiated)', async () => {
    const c = await RawNbdClient.connect(port);
    await c.handshake('ro');
    c.request(P.NBD_CMD_WRITE_ZEROES, 0, 512, 21n, P.NBD_CMD_FLAG_NO_HOLE);
    expect(await c.simpleReply()).toMatchObject({ error: P.NBD_EPERM, cookie: 21n });
    c.request(P.NBD_CMD_FLUSH, 0, 0, 22n);
    expect(await c.simpleReply()).toMatchObject({ error: 0, cookie: 22n });
    c.request(P.NBD_CMD_CACHE, 0, 4096, 23n);
    expect(await c.simpleReply()).toMatchObject({ error: 0, cookie: 23n });
    c.destroy();
  });

  it('a client that never reads its replies stops being served (bounded buffering), and catches up when it reads', async () => {
    const c = await RawNbdClient.connect(port);
    await c.handshake('d');
    c.socket.pause();
    const before = drive.stats().rdOperations;
    const n = 200;
    for (let i = 0; i < n; i++) c.request(P.NBD_CMD_READ, 0, MiB, BigInt(1000 + i));
    await new Promise((r) => setTimeout(r, 500));
    // Socket buffers hold some replies; then the server stops reading requests instead of queueing 200 MiB.
    const served = drive.stats().rdOperations - before;
    console.log(`backpressure: ${served} of ${n} 1 MiB reads served while the client did not read`);
    expect(served).toBeLessThan(n / 2);
    c.socket.resume();
    for (let i = 0; i < n; i++) expect((await c.simpleReply(MiB)).error).toBe(0);
    expect(drive.stats().rdOperations - before).toBe(n);
    c.destroy();
  });

  it('zero-length READ, WRITE, TRIM, WRITE_ZEROES and CACHE succeed (at the end of the export too)', async () => {
    const c = await RawNbdClient.connect(port);
    await c.handshake('d');
    let cookie = 30n;
    for (const type of [P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_TRIM, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_CACHE]) {
      for (const offset of [0, MiB]) {
        c.request(type, offset, 0, cookie);
        expect(await c.simpleReply()).toMatchObject({ error: 0, cookie });
        cookie++;
      }
    }
    c.destroy();
  });

  it('a client flooding WRITEs to a slow drive is not read ahead without bound (bytes in flight are capped)', async () => {
    // A server of its own: the flooded connection works through what its socket buffers hold before it notices the client left.
    const slow = await layer.openDrive({ driver: 'memory', size: 4 * MiB, throttle: { iopsTotal: 5 } });
    const own = new NbdServer({ exports: [{ name: 'slow', drive: slow }], maxRequest: 1 * MiB });
    const a = await own.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    const c = await RawNbdClient.connect(a.port);
    await c.handshake('slow');
    const payload = Buffer.alloc(MiB, 0x5a);
    const n = 100;
    for (let i = 0; i < n; i++) c.request(P.NBD_CMD_WRITE, (i % 4) * MiB, MiB, BigInt(2000 + i), 0, payload);
    await new Promise((r) => setTimeout(r, 500));
    // The server takes on about 2 × maxRequest of requests (64 without that cap): the rest waits with the client.
    expect(slow.stats().inFlight).toBeLessThanOrEqual(3);
    expect(slow.stats().wrOperations).toBeLessThan(10);
    await own.close();
    await c.closed;
    c.destroy();
  });

  it('structured replies: READ as OFFSET_DATA, errors as ERROR chunks, BLOCK_STATUS extents (REQ_ONE: one)', async () => {
    const c = await RawNbdClient.connect(port);
    const { size, contextId } = await c.structuredGo('d');
    expect(size).toBe(MiB);
    c.request(P.NBD_CMD_READ, 4096, 8192, 40n);
    const [data] = await c.structuredReply();
    expect(data).toMatchObject({ type: P.NBD_REPLY_TYPE_OFFSET_DATA, cookie: 40n });
    expect(data?.payload.readBigUInt64BE(0)).toBe(4096n);
    expect(sha(data?.payload.subarray(8) ?? Buffer.alloc(0))).toBe(sha(await drive.read(4096, 8192)));

    c.request(P.NBD_CMD_READ, MiB, 1, 41n);
    const [err] = await c.structuredReply();
    expect(err).toMatchObject({ type: P.NBD_REPLY_TYPE_ERROR, cookie: 41n });
    expect(err?.payload.readUInt32BE(0)).toBe(P.NBD_EINVAL);
    expect(err?.payload.subarray(6).toString()).toMatch(/beyond the export size/);

    const expected = merge((await drive.blockStatusMap()).map((e) => ({ offset: e.offset, length: e.length, flags: P.allocationFlags(e) })));
    const extents = (payload: Buffer) => {
      expect(payload.readUInt32BE(0)).toBe(contextId);
      const out: { length: number; flags: number }[] = [];
      for (let o = 4; o < payload.byteLength; o += 8) out.push({ length: payload.readUInt32BE(o), flags: payload.readUInt32BE(o + 4) });
      return out;
    };
    c.request(P.NBD_CMD_BLOCK_STATUS, 0, MiB, 42n);
    const [all] = await c.structuredReply();
    expect(all?.type).toBe(P.NBD_REPLY_TYPE_BLOCK_STATUS);
    expect(extents(all?.payload as Buffer)).toEqual(expected.map(({ length, flags }) => ({ length, flags })));
    c.request(P.NBD_CMD_BLOCK_STATUS, 0, MiB, 43n, P.NBD_CMD_FLAG_REQ_ONE);
    const [one] = await c.structuredReply();
    expect(extents(one?.payload as Buffer)).toEqual([{ length: expected[0]?.length, flags: expected[0]?.flags }]);
    // REQ_ONE never reports beyond the requested length.
    c.request(P.NBD_CMD_BLOCK_STATUS, 0, 100, 44n, P.NBD_CMD_FLAG_REQ_ONE);
    const [short] = await c.structuredReply();
    expect(extents(short?.payload as Buffer)).toEqual([{ length: 100, flags: 0 }]);
    // WRITE successes stay simple replies.
    c.request(P.NBD_CMD_FLUSH, 0, 0, 45n);
    expect(await c.simpleReply()).toMatchObject({ error: 0, cookie: 45n });
    c.destroy();
  });

  it('option haggling: LIST, INFO, unknown export, STARTTLS refused by policy, meta contexts need structured replies', async () => {
    const c = await RawNbdClient.connect(port);
    await c.read(P.SERVER_GREETING_SIZE);
    c.write(Buffer.from([0, 0, 0, P.NBD_FLAG_C_FIXED_NEWSTYLE]));
    const list = await c.option(P.NBD_OPT_LIST);
    const names = list.filter((r) => r.type === P.NBD_REP_SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
    expect(names).toEqual(['d', 'ro']);
    expect((await c.option(P.NBD_OPT_STARTTLS))[0]?.type).toBe(P.NBD_REP_ERR_POLICY);
    expect((await c.option(P.NBD_OPT_INFO, P.encodeInfoRequest('nope')))[0]?.type).toBe(P.NBD_REP_ERR_UNKNOWN);
    expect((await c.option(P.NBD_OPT_LIST_META_CONTEXT, P.encodeMetaContextRequest('d', [])))[0]?.type).toBe(P.NBD_REP_ERR_INVALID);
    expect((await c.option(P.NBD_OPT_EXTENDED_HEADERS))[0]?.type).toBe(P.NBD_REP_ERR_UNSUP);
    const info = await c.option(P.NBD_OPT_INFO, P.encodeInfoRequest('ro', [P.NBD_INFO_NAME, P.NBD_INFO_BLOCK_SIZE]));
    const byType = new Map(info.filter((r) => r.type === P.NBD_REP_INFO).map((r) => [r.data.readUInt16BE(0), r.data]));
    expect(byType.get(P.NBD_INFO_EXPORT)?.readUInt16BE(10)).toBe(P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_READ_ONLY | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_CACHE | P.NBD_FLAG_CAN_MULTI_CONN);
    expect(byType.get(P.NBD_INFO_NAME)?.subarray(2).toString()).toBe('ro');
    expect([1, 4096, MiB].map((_, i) => byType.get(P.NBD_INFO_BLOCK_SIZE)?.readUInt32BE(2 + 4 * i))).toEqual([1, 4096, MiB]);
    expect(info[info.length - 1]?.type).toBe(P.NBD_REP_ACK);
    // INFO leaves the client in negotiation: ABORT still works.
    expect((await c.option(P.NBD_OPT_ABORT))[0]?.type).toBe(P.NBD_REP_ACK);
    await c.closed;
  });

  it('a client that does not speak fixed newstyle is refused', async () => {
    const c = await RawNbdClient.connect(port);
    await c.read(P.SERVER_GREETING_SIZE);
    c.write(Buffer.from([0, 0, 0, 0]));
    await c.closed;
  });

  it('beyond maxConnections a connection waits without a greeting until a client leaves (as qemu-nbd); past as many waiting it is closed; both are reported', async () => {
    const full: { waiting: boolean; maxConnections: number; port?: number }[] = [];
    const onFull = (e: { waiting: boolean; maxConnections: number; port?: number }) => full.push(e);
    server.on('full', onFull);
    const held: RawNbdClient[] = [];
    const waiting: RawNbdClient[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const c = await RawNbdClient.connect(port);
        await c.handshake('d');
        held.push(c);
      }
      expect(server.connectionCount).toBe(4);
      for (let i = 0; i < 4; i++) {
        waiting.push(await RawNbdClient.connect(port));
        await pollFor(() => full.length === i + 1);
      }
      expect(full.map((e) => [e.waiting, e.maxConnections, e.port])).toEqual(waiting.map((c) => [true, 4, c.socket.localPort]));
      const extra = await RawNbdClient.connect(port);
      const extraPort = extra.socket.localPort;
      await extra.closed;
      expect(extra.pending).toBe(0);
      await pollFor(() => full.length === 5);
      expect(full[4]).toMatchObject({ waiting: false, maxConnections: 4, port: extraPort });
      await new Promise((r) => setTimeout(r, 100));
      // Still waiting: connected, no greeting.
      expect(waiting.map((c) => [c.isClosed, c.pending])).toEqual(waiting.map(() => [false, 0]));
      // A waiting client that gives up leaves the queue; the next one is greeted when a slot frees.
      waiting[0]?.destroy();
      await new Promise((r) => setTimeout(r, 50));
      held[0]?.destroy();
      const next = waiting[1] as RawNbdClient;
      await next.handshake('d');
      await checkGoodClient(next, 20n);
      expect(waiting.slice(2).map((c) => c.pending)).toEqual([0, 0]);
    } finally {
      server.off('full', onFull);
      for (const c of [...held, ...waiting]) c.destroy();
      await Promise.all([...held, ...waiting].map((c) => c.closed));
    }
    expect(await pollFor(() => server.connectionCount === 0)).toBe(true);
  });

  it('CAN_MULTI_CONN is advertised only when more than one connection is allowed', async () => {
    const one = new NbdServer({ exports: [{ name: 'd', drive }], maxConnections: 1 });
    try {
      const a = await one.listen({ host: '127.0.0.1', port: 0 });
      if (!('port' in a)) throw new Error('expected a TCP address');
      const c = await RawNbdClient.connect(a.port);
      expect((await c.handshake('d')).flags & P.NBD_FLAG_CAN_MULTI_CONN).toBe(0);
      c.destroy();
    } finally {
      await one.close();
    }
    const c = await RawNbdClient.connect(port);
    expect((await c.handshake('d')).flags & P.NBD_FLAG_CAN_MULTI_CONN).toBe(P.NBD_FLAG_CAN_MULTI_CONN);
    c.destroy();
  });
});

/** Polls `cond` every 10 ms for up to 2 s. */
async function pollFor(cond: () => boolean): Promise<boolean> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  return cond();
}

describe('export names are UTF-8', () => {
  /** INFO/GO data for a name given as raw bytes. */
  const goData = (name: Buffer) => {
    const b = Buffer.alloc(4 + name.byteLength + 2);
    b.writeUInt32BE(name.byteLength, 0);
    name.copy(b, 4);
    return b;
  };
  const FFFE = Buffer.from([0xff, 0xfe]);

  it('bytes that are not UTF-8 do not select the export whose name they would decode to (U+FFFD U+FFFD): GO/INFO/META get ERR_INVALID, EXPORT_NAME a hang-up', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: MiB });
    const server = new NbdServer({ exports: [{ name: '\uFFFD\uFFFD', drive }, { name: 'd', drive }] });
    const errors: string[] = [];
    server.on('error', (e) => errors.push(e.error.message));
    try {
      const a = await server.listen({ host: '127.0.0.1', port: 0 });
      if (!('port' in a)) throw new Error('expected a TCP address');
      const c = await RawNbdClient.connect(a.port);
      await c.read(P.SERVER_GREETING_SIZE);
      c.write(Buffer.from([0, 0, 0, P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES]));
      for (const option of [P.NBD_OPT_INFO, P.NBD_OPT_GO]) {
        const r = await c.option(option, goData(FFFE));
        expect(r.map((x) => x.type)).toEqual([P.NBD_REP_ERR_INVALID]);
        expect(r[0]?.data.toString()).toMatch(/name is not valid UTF-8/);
      }
      // A BOM is part of the name: it does not select 'd'.
      expect((await c.option(P.NBD_OPT_INFO, goData(Buffer.from([0xef, 0xbb, 0xbf, 0x64]))))[0]?.type).toBe(P.NBD_REP_ERR_UNKNOWN);
      expect((await c.option(P.NBD_OPT_STRUCTURED_REPLY))[0]?.type).toBe(P.NBD_REP_ACK);
      const meta = Buffer.concat([goData(FFFE).subarray(0, 6), Buffer.from([0, 0, 0, 0])]);
      expect((await c.option(P.NBD_OPT_SET_META_CONTEXT, meta)).map((x) => x.type)).toEqual([P.NBD_REP_ERR_INVALID]);
      // The name's own bytes (EF BF BD twice) select it.
      const go = await c.option(P.NBD_OPT_GO, goData(Buffer.from('\uFFFD\uFFFD')));
      expect(go[go.length - 1]?.type).toBe(P.NBD_REP_ACK);
      c.destroy();

      const x = await RawNbdClient.connect(a.port);
      await x.read(P.SERVER_GREETING_SIZE);
      x.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), P.encodeOptionHeader(P.NBD_OPT_EXPORT_NAME, 2), FFFE]));
      await x.closed;
      expect(x.pending).toBe(0);
      expect(errors).toEqual(['NBD_OPT_EXPORT_NAME: the name is not valid UTF-8']);
    } finally {
      await server.close();
      await drive.close();
    }
  });

  it('names and descriptions that UTF-8 cannot carry (lone surrogates) are refused: addExport and QMP block-export-add', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: MiB, id: 'utf8disk' });
    const server = new NbdServer();
    try {
      expect(() => server.addExport({ name: 'a\udcff', drive })).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'name', message: expect.stringMatching(/not valid UTF-8/) }));
      expect(() => server.addExport({ name: 'ok', drive, description: '\ud800' })).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'description' }));
      expect(server.exportNames).toEqual([]);
      const manager = new NbdExportManager(layer, server);
      await expect(manager.add({ type: 'nbd', id: 'e1', 'node-name': 'utf8disk', name: '\udcff' })).rejects.toMatchObject({ code: 'EINVAL', field: 'name', message: expect.stringMatching(/Parameter 'name' is not valid UTF-8/) });
      await expect(manager.add({ type: 'nbd', id: 'e1', 'node-name': 'utf8disk', name: 'fine', description: 'x\udcff' })).rejects.toMatchObject({ code: 'EINVAL', field: 'description' });
      await manager.add({ type: 'nbd', id: 'e1', 'node-name': 'utf8disk', name: '\uFFFD' });
      expect(server.exportNames).toEqual(['\uFFFD']);
    } finally {
      await server.close();
      await drive.close();
    }
  });
});

describe('NbdServer lifecycle', () => {
  it('close() answers requests in flight, flushes the drive, ends connections and leaves the drive open', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: MiB, throttle: { iopsTotal: 5 } });
    const server = new NbdServer({ exports: [{ name: 'd', drive }] });
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    const c = await RawNbdClient.connect(a.port);
    await c.handshake('d');
    // Throttled to one every 200 ms: the later ones are still queued when close() starts.
    for (let i = 0; i < 3; i++) c.request(P.NBD_CMD_WRITE, i * 512, 512, BigInt(100 + i), 0, Buffer.alloc(512, i + 1));
    await new Promise((r) => setTimeout(r, 20));
    const flushes = drive.stats().flushOperations;
    await server.close();
    const cookies = [];
    for (let i = 0; i < 3; i++) cookies.push((await c.simpleReply()).cookie);
    expect(cookies.sort()).toEqual([100n, 101n, 102n]);
    await c.closed;
    expect(drive.stats().flushOperations).toBeGreaterThan(flushes);
    expect(drive.closed).toBe(false);
    expect((await drive.read(1024, 512)).every((x) => x === 3)).toBe(true);
    await drive.close();
  });

  it('close() also ends connections waiting for a slot (past maxConnections), without greeting them', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: MiB });
    const server = new NbdServer({ exports: [{ name: 'd', drive }], maxConnections: 1 });
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    const waits = new Promise<void>((resolve) => server.once('full', () => resolve()));
    const first = await RawNbdClient.connect(a.port);
    await first.handshake('d');
    const second = await RawNbdClient.connect(a.port);
    await waits;
    await server.close();
    await Promise.all([first.closed, second.closed]);
    expect(second.pending).toBe(0);
    await drive.close();
  });

  it('close() does not wait forever for a client that never takes its replies', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: MiB });
    const server = new NbdServer({ exports: [{ name: 'd', drive }], handshakeTimeoutMs: 300 });
    const reasons: (string | undefined)[] = [];
    server.on('disconnect', (c) => reasons.push(c.reason));
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    const c = await RawNbdClient.connect(a.port);
    await c.handshake('d');
    c.socket.pause();
    for (let i = 0; i < 64; i++) c.request(P.NBD_CMD_READ, 0, MiB, BigInt(i));
    await new Promise((r) => setTimeout(r, 100));
    await server.close();
    expect(reasons).toEqual(['replies not taken within 300 ms of the end']);
    c.destroy();
    await drive.close();
  });

  it('listens on a Unix socket; removeExport disconnects its clients and the name is then unknown to NBD_OPT_GO', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: MiB });
    const server = new NbdServer({ exports: [{ name: 'd', drive }] });
    const sock = path.join(dir, 'nbd.sock');
    const a = await server.listen({ path: sock });
    expect(a).toEqual({ path: sock });
    if (haveQemu) {
      const info = await ok('qemu-img', ['info', '--output=json', '-f', 'raw', `nbd+unix:///d?socket=${sock}`]);
      expect(JSON.parse(info)['virtual-size']).toBe(MiB);
    }
    await server.close();
    const s2 = new NbdServer({ exports: [{ name: 'd', drive }] });
    const b = await s2.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in b)) throw new Error('expected a TCP address');
    const c = await RawNbdClient.connect(b.port);
    await c.handshake('d');
    await s2.removeExport('d');
    await c.closed;
    await expect(s2.removeExport('d')).rejects.toMatchObject({ code: 'ENOENT' });
    // GO for the removed name: NBD_REP_ERR_UNKNOWN.
    const g = await RawNbdClient.connect(b.port);
    await g.read(P.SERVER_GREETING_SIZE);
    const data = P.encodeInfoRequest('d');
    g.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), P.encodeOptionHeader(P.NBD_OPT_GO, data.byteLength), data]));
    const h = P.decodeOptionReplyHeader(await g.read(P.OPTION_REPLY_HEADER_SIZE));
    expect(h).toMatchObject({ option: P.NBD_OPT_GO, type: P.NBD_REP_ERR_UNKNOWN });
    await g.read(h.length);
    g.write(P.encodeOptionHeader(P.NBD_OPT_ABORT, 0));
    expect(P.decodeOptionReplyHeader(await g.read(P.OPTION_REPLY_HEADER_SIZE))).toMatchObject({ option: P.NBD_OPT_ABORT, type: P.NBD_REP_ACK });
    await g.closed;
    await s2.close();
    await drive.close();
  });

  it('listen refuses a bad port (EINVAL) and an address in use (EEXIST), and the server can listen again after', async () => {
    const server = new NbdServer();
    await expect(server.listen({ host: '127.0.0.1', port: 70000 })).rejects.toMatchObject({ code: 'EINVAL', field: 'port' });
    const a = await server.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in a)) throw new Error('expected a TCP address');
    const other = new NbdServer();
    await expect(other.listen({ host: '127.0.0.1', port: a.port })).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(server.listen({ host: '127.0.0.1', port: 0 })).rejects.toMatchObject({ code: 'EINVAL' });
    await server.close();
    await other.close();
  });

  it('bad options are refused when the server is made', () => {
    expect(() => new NbdServer({ maxConnections: 0 })).toThrow(/maxConnections/);
    expect(() => new NbdServer({ maxRequest: 2 ** 33 })).toThrow(/maxRequest/);
  });
});
