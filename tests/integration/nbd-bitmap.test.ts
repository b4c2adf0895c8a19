// Dirty bitmaps and allocation depth over NBD, judged by clients nobody here wrote (nbdinfo,
// qemu-img map over the nbd driver) against what QEMU's own server (qemu-nbd -B / -A) serves.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, imageMap, NbdServer } from '../../src/index.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { NbdExportManager } from '../../src/qmp/exports.js';
import { QmpServer } from '../../src/qmp/server.js';
import { startQemuDaemon, stopPid } from '../helpers/qemu-daemons.js';
import { haveQemuTools } from '../helpers/qemu-images.js';
import { serve } from '../helpers/serve-process.js';
import { haveProgram, ok } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const CI = process.env.CI === 'true';
const haveQemu = haveQemuTools() && haveProgram('qemu-nbd');
const haveLibnbd = haveProgram('nbdinfo');
if (CI && (!haveQemu || !haveLibnbd)) throw new Error('qemu-nbd/qemu-img/nbdinfo missing in CI');
if (!haveQemu || !haveLibnbd) console.log('NBD bitmap tests skipped: they need qemu-utils (qemu-img, qemu-io, qemu-nbd) and libnbd-bin (nbdinfo)');

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
let dir: string;
const layer = new BlockLayer();

/** The same guest I/O, for qemu-io and for a Drive. */
const OPS = [
  { op: 'write', offset: 70000, length: 100 },
  { op: 'write', offset: 10 * MiB, length: 3 * MiB },
  { op: 'zero', offset: 20 * MiB, length: MiB },
  { op: 'discard', offset: 30 * MiB, length: 128 * 1024 },
  { op: 'write', offset: SIZE - 4096, length: 4096 },
] as const;

function qemuIoCommands(): string[] {
  return OPS.map((o) => (o.op === 'write' ? `write -P 7 ${o.offset} ${o.length}` : o.op === 'zero' ? `write -z ${o.offset} ${o.length}` : `discard ${o.offset} ${o.length}`));
}

async function applyOps(d: Drive): Promise<void> {
  for (const o of OPS) {
    if (o.op === 'write') await d.write(o.offset, Buffer.alloc(o.length, 7));
    else if (o.op === 'zero') await d.writeZeroes(o.offset, o.length);
    else await d.discard(o.offset, o.length);
  }
}

const uri = (socket: string, name = '') => `nbd+unix:///${name}?socket=${socket}`;

/** qemu-nbd serving `args` on a fresh socket until stopped. */
async function qemuNbd(args: string[]): Promise<{ socket: string; stop: () => Promise<void> }> {
  const socket = path.join(dir, `q${Math.random().toString(36).slice(2, 8)}.sock`);
  const child: ChildProcess = spawn('qemu-nbd', ['-t', '-k', socket, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  for (let i = 0; !fs.existsSync(socket); i++) {
    if (i > 200 || child.exitCode !== null) throw new Error(`qemu-nbd did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    socket,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** Our server on a fresh socket. */
async function ours(exports: ConstructorParameters<typeof NbdServer>[0]): Promise<{ socket: string; server: NbdServer }> {
  const socket = path.join(dir, `o${Math.random().toString(36).slice(2, 8)}.sock`);
  const server = new NbdServer(exports);
  await server.listen({ path: socket });
  return { socket, server };
}

/** A QMP session over a unix socket: capabilities negotiated, one command at a time. */
async function qmpSession(socket: string): Promise<{ cmd: (execute: string, args?: object) => Promise<unknown>; close: () => void }> {
  for (let i = 0; !fs.existsSync(socket); i++) {
    if (i > 200) throw new Error(`no QMP socket at ${socket}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  const sock = net.connect(socket);
  let buf = '';
  const waiting: ((line: Record<string, unknown>) => void)[] = [];
  sock.on('data', (b) => {
    buf += b.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      buf = buf.slice(nl + 1);
      if (!('event' in msg)) waiting.shift()?.(msg);
    }
  });
  const next = () => new Promise<Record<string, unknown>>((resolve) => waiting.push(resolve));
  await next(); // the greeting
  const cmd = (execute: string, args?: object) => {
    sock.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    return next();
  };
  await cmd('qmp_capabilities');
  return { cmd, close: () => sock.destroy() };
}

/** A bare NBD client over a unix socket: SET_META_CONTEXT with `queries`, then BLOCK_STATUS chunks by context name. */
async function rawContexts(socket: string, queries: string[]) {
  const sock = net.connect(socket);
  let buf = Buffer.alloc(0);
  let wake: (() => void) | null = null;
  sock.on('data', (b: Buffer) => {
    buf = Buffer.concat([buf, b]);
    wake?.();
  });
  const read = async (n: number): Promise<Buffer> => {
    while (buf.byteLength < n) await new Promise<void>((r) => (wake = r));
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  const option = async (code: number, data: Uint8Array = Buffer.alloc(0)) => {
    sock.write(Buffer.concat([P.encodeOptionHeader(code, data.byteLength), data]));
    const replies: { type: number; data: Buffer }[] = [];
    for (;;) {
      const h = P.decodeOptionReplyHeader(await read(P.OPTION_REPLY_HEADER_SIZE));
      replies.push({ type: h.type, data: await read(h.length) });
      if (h.type === P.NBD_REP_ACK || h.type >= 0x80000000) return replies;
    }
  };
  await read(P.SERVER_GREETING_SIZE);
  sock.write(P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES));
  await option(P.NBD_OPT_STRUCTURED_REPLY);
  const names = new Map<number, string>();
  for (const r of await option(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest('', queries))) {
    if (r.type === P.NBD_REP_META_CONTEXT) names.set(r.data.readUInt32BE(0), r.data.subarray(4).toString());
  }
  await option(P.NBD_OPT_GO, P.encodeInfoRequest(''));
  let cookie = 1n;
  return {
    selected: [...names.values()],
    /** The chunks of one BLOCK_STATUS reply, in order: context name and (length, flags) pairs. */
    async blockStatus(offset: number, length: number, flags = 0) {
      sock.write(P.encodeRequest({ type: P.NBD_CMD_BLOCK_STATUS, flags, cookie: cookie++, offset, length }));
      const chunks: { context: string; extents: [number, number][] }[] = [];
      for (;;) {
        const h = P.decodeStructuredReplyHeader(await read(P.STRUCTURED_REPLY_HEADER_SIZE));
        const payload = await read(h.length);
        if (h.type !== P.NBD_REPLY_TYPE_BLOCK_STATUS) throw new Error(`reply type ${h.type}`);
        const extents: [number, number][] = [];
        for (let o = 4; o < payload.byteLength; o += 8) extents.push([payload.readUInt32BE(o), payload.readUInt32BE(o + 4)]);
        chunks.push({ context: names.get(payload.readUInt32BE(0)) ?? '?', extents });
        if (h.flags & P.NBD_REPLY_FLAG_DONE) return chunks;
      }
    },
    close: () => sock.destroy(),
  };
}

const nbdinfoMap = async (context: string, u: string) => JSON.parse(await ok('nbdinfo', [`--map=${context}`, '--json', u]));
const contextsListed = async (u: string) =>
  (await ok('nbdinfo', ['--list', u]))
    .split('\n')
    .filter((l) => /^\t\t(base|qemu):/.test(l))
    .map((l) => l.trim());
const qemuImgMap = async (socket: string, context: string) =>
  JSON.parse(await ok('qemu-img', ['map', '--output=json', '--image-opts', `driver=nbd,server.type=unix,server.path=${socket},x-dirty-bitmap=${context}`]));

describe.skipIf(!haveQemu || !haveLibnbd)('NBD meta contexts qemu:dirty-bitmap and qemu:allocation-depth, against qemu-nbd', () => {
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-nbd-bitmap-'));
  });
  afterAll(async () => {
    await layer.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a bitmap dirtied by the same writes, zeroes and discards: nbdinfo --map and qemu-img map x-dirty-bitmap equal qemu-nbd -r -B', async () => {
    // QEMU's side: a persistent bitmap, the I/O by qemu-io, served by qemu-nbd -r -B.
    const theirs = path.join(dir, 'theirs.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', theirs, String(SIZE)]);
    await ok('qemu-img', ['bitmap', '--add', theirs, 'b0']);
    await ok('qemu-io', ['-f', 'qcow2', ...qemuIoCommands().flatMap((c) => ['-c', c]), theirs]);
    // Ours: the same image and I/O through a Drive, the bitmap added through the API.
    const mine = path.join(dir, 'mine.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', mine, String(SIZE)]);
    const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: mine } });
    d.addDirtyBitmap('b0');
    await applyOps(d);
    d.disableDirtyBitmap('b0');

    const q = await qemuNbd(['-r', '-f', 'qcow2', '-B', 'b0', theirs]);
    const o = await ours({ exports: [{ name: '', drive: d, readOnly: true, bitmaps: ['b0'] }] });
    try {
      const expected = await nbdinfoMap('qemu:dirty-bitmap:b0', uri(q.socket));
      expect(expected.filter((e: { type: number }) => e.type === 1)).toHaveLength(OPS.length);
      expect(await nbdinfoMap('qemu:dirty-bitmap:b0', uri(o.socket))).toEqual(expected);
      expect(await contextsListed(uri(o.socket))).toEqual(await contextsListed(uri(q.socket)));
      const reference = await qemuImgMap(q.socket, 'qemu:dirty-bitmap:b0');
      expect(await qemuImgMap(o.socket, 'qemu:dirty-bitmap:b0')).toEqual(reference);
      // Our nbd client's x-dirty-bitmap, over qemu-nbd and over ours: the map qemu-img prints.
      for (const socket of [q.socket, o.socket]) {
        expect(await imageMap({ driver: 'nbd', server: { type: 'unix', path: socket }, xDirtyBitmap: 'qemu:dirty-bitmap:b0', readOnly: true }, { layer })).toEqual(reference);
      }
      // blocklayer map over a URI with x-dirty-bitmap: the same ranges and flags (the raw layer the
      // URI opens through adds an offset to dirty ranges, which qemu-img's nbd node leaves out).
      const cliMap = JSON.parse(await ok(process.execPath, [...CLI, 'map', `${uri(o.socket)}&x-dirty-bitmap=qemu:dirty-bitmap:b0`]));
      const flagsOf = (m: { start: number; length: number; present: boolean; zero: boolean; data: boolean }[]) => m.map(({ start, length, present, zero, data }) => ({ start, length, present, zero, data }));
      expect(flagsOf(cliMap)).toEqual(flagsOf(reference));
      await expect(imageMap({ driver: 'nbd', server: { type: 'unix', path: q.socket }, xDirtyBitmap: 'qemu:dirty-bitmap:nope', readOnly: true }, { layer })).rejects.toThrow(
        'requested x-dirty-bitmap qemu:dirty-bitmap:nope not found',
      );
      expect(d.dirtyBitmaps()[0]?.busy).toBe(true);
      // The persistent bitmap QEMU wrote, served by blocklayer serve -r -B as qemu-nbd serves it.
      const cliSocket = path.join(dir, 'cli-b.sock');
      const cli = await serve('-r', '-f', 'qcow2', '-B', 'b0', '-k', cliSocket, theirs);
      try {
        expect(await nbdinfoMap('qemu:dirty-bitmap:b0', uri(cliSocket))).toEqual(expected);
        expect(await contextsListed(uri(cliSocket))).toEqual(['base:allocation', 'qemu:dirty-bitmap:b0']);
        expect(await qemuImgMap(cliSocket, 'qemu:dirty-bitmap:b0')).toEqual(reference);
      } finally {
        cli.child.kill('SIGTERM');
        expect(await cli.exited).toBe(0);
      }
    } finally {
      await q.stop();
      await o.server.close();
    }
    expect(d.dirtyBitmaps()[0]?.busy).toBe(false);
    await d.close();
  });

  it('qemu:allocation-depth of a qcow2 over a qcow2 backing: listed and mapped as qemu-nbd -A does', async () => {
    const base = path.join(dir, 'base.qcow2');
    const over = path.join(dir, 'over.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(SIZE)]);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 2M', '-c', 'write -P 2 8M 1M', '-c', 'write -z 40M 64k', base]);
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', over]);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 3 1M 2M', '-c', 'write -z 8M 64k', '-c', 'write -P 4 50M 512', over]);
    const q = await qemuNbd(['-r', '-A', '-f', 'qcow2', over]);
    const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: over }, readOnly: true });
    const o = await ours({ exports: [{ name: '', drive: d, allocationDepth: true }] });
    try {
      expect(await contextsListed(uri(o.socket))).toEqual(['base:allocation', 'qemu:allocation-depth']);
      expect(await contextsListed(uri(o.socket))).toEqual(await contextsListed(uri(q.socket)));
      const expected = await nbdinfoMap('qemu:allocation-depth', uri(q.socket));
      expect(new Set(expected.map((e: { type: number }) => e.type))).toEqual(new Set([0, 1, 2]));
      expect(await nbdinfoMap('qemu:allocation-depth', uri(o.socket))).toEqual(expected);
      // x-dirty-bitmap=qemu:allocation-depth, read by qemu-img and by our client.
      const reference = await qemuImgMap(q.socket, 'qemu:allocation-depth');
      expect(await qemuImgMap(o.socket, 'qemu:allocation-depth')).toEqual(reference);
      expect(await imageMap({ driver: 'nbd', server: { type: 'unix', path: o.socket }, xDirtyBitmap: 'qemu:allocation-depth', readOnly: true }, { layer })).toEqual(reference);
      // The same through the command line, as qemu-nbd is called.
      const cliSocket = path.join(dir, 'cli.sock');
      const cli = await serve('-r', '-A', '-f', 'qcow2', '-k', cliSocket, over);
      try {
        expect(await contextsListed(uri(cliSocket))).toEqual(['base:allocation', 'qemu:allocation-depth']);
        expect(await nbdinfoMap('qemu:allocation-depth', uri(cliSocket))).toEqual(expected);
      } finally {
        cli.child.kill('SIGTERM');
        expect(await cli.exited).toBe(0);
      }
    } finally {
      await q.stop();
      await o.server.close();
      await d.close();
    }
  });

  it('serve -B refuses a bitmap the image does not have, with QEMU\'s words', async () => {
    const img = path.join(dir, 'plain.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1M']);
    await expect(serve('-r', '-B', 'nope', '-k', path.join(dir, 'never.sock'), img)).rejects.toThrow(/Bitmap 'nope' is not found/);
  });

  it('block-export-add with bitmaps and allocation-depth: every answer as qemu-storage-daemon gives it; the bitmap busy while exported', async () => {
    const img = path.join(dir, 'qmp.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1M']);
    const qsdQmp = path.join(dir, 'qsd-qmp.sock');
    const pid = startQemuDaemon(
      'qemu-storage-daemon',
      [
        '--blockdev', `driver=file,node-name=f1,filename=${img}`,
        '--blockdev', 'driver=qcow2,node-name=n1,file=f1',
        '--nbd-server', `addr.type=unix,addr.path=${path.join(dir, 'qsd-nbd.sock')}`,
        '--chardev', `socket,id=c,path=${qsdQmp},server=on,wait=off`,
        '--monitor', 'chardev=c,mode=control',
      ],
      dir,
    );
    const theirs = await qmpSession(qsdQmp);
    expect(await theirs.cmd('block-dirty-bitmap-add', { node: 'n1', name: 'b0' })).toEqual({ return: {} });
    // Ours: the same image and node names, the bitmap added through the API.
    const mine = path.join(dir, 'qmp-mine.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', mine, '1M']);
    const d = await layer.openDrive({ driver: 'qcow2', nodeName: 'n1', file: { driver: 'file', nodeName: 'f1', filename: mine } });
    d.addDirtyBitmap('b0');
    const nbd = new NbdServer();
    const ourNbd = path.join(dir, 'our-nbd.sock');
    await nbd.listen({ path: ourNbd });
    const qmp = new QmpServer(layer, { exports: new NbdExportManager(layer, nbd) });
    const ourQmp = path.join(dir, 'our-qmp.sock');
    await qmp.listen({ path: ourQmp });
    const mineQ = await qmpSession(ourQmp);
    try {
      const attempts: unknown[] = ['x', [1], [{ node: 'n1' }], [{ node: 'n1', name: 3 }], [{ node: 'zz', name: 'b0' }], [{ node: 'n1', name: 'zz' }], ['zz'], ['b0'], [{ node: 'n1', name: 'b0', x: 1 }]];
      for (const bitmaps of attempts) {
        const args = { type: 'nbd', id: 'e1', 'node-name': 'n1', bitmaps };
        expect(await mineQ.cmd('block-export-add', args), JSON.stringify(bitmaps)).toEqual(await theirs.cmd('block-export-add', args));
      }
      const bad = { type: 'nbd', id: 'e2', 'node-name': 'n1', 'allocation-depth': 1 };
      expect(await mineQ.cmd('block-export-add', bad)).toEqual(await theirs.cmd('block-export-add', bad));
      // Exported writable with its bitmap and allocation depth: busy, so a clear is refused.
      const good = { type: 'nbd', id: 'e3', 'node-name': 'n1', writable: true, bitmaps: [{ node: 'n1', name: 'b0' }], 'allocation-depth': true };
      expect(await mineQ.cmd('block-export-add', good)).toEqual({ return: {} });
      expect(await theirs.cmd('block-export-add', good)).toEqual({ return: {} });
      expect(d.dirtyBitmaps()[0]?.busy).toBe(true);
      expect(await contextsListed(uri(ourNbd, 'n1'))).toEqual(await contextsListed(uri(path.join(dir, 'qsd-nbd.sock'), 'n1')));
      expect(() => d.clearDirtyBitmap('b0')).toThrow(/currently in use by another operation/);
      expect(await theirs.cmd('block-dirty-bitmap-clear', { node: 'n1', name: 'b0' })).toMatchObject({ error: { desc: "Bitmap 'b0' is currently in use by another operation and cannot be used" } });
      expect(await mineQ.cmd('block-export-del', { id: 'e3' })).toEqual({ return: {} });
      expect(d.dirtyBitmaps()[0]?.busy).toBe(false);
    } finally {
      theirs.close();
      mineQ.close();
      await stopPid(pid);
      await qmp.close();
      await nbd.close();
      await d.close();
    }
  });

  it('an incremental backup cycle: full copy by nbdcopy, writes by qemu-io over NBD, only the extents nbdinfo maps dirty copied → the copy equals the disk (sha256)', async () => {
    const disk = path.join(dir, 'disk.raw');
    await ok('qemu-img', ['create', '-q', '-f', 'raw', disk, String(SIZE)]);
    await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 8M', '-c', 'write -P 0x22 32M 4M', '-c', 'write -P 0x33 60M 1M', disk]);
    const d = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: disk } });
    const o = await ours({ exports: [{ name: 'vm', drive: d }] });
    const u = uri(o.socket, 'vm');
    const sha = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    try {
      // Full backup, the bitmap started with it (nothing writes in between).
      d.addDirtyBitmap('backup', { granularity: 65536 });
      const copy = path.join(dir, 'copy.raw');
      await ok('nbdcopy', [u, copy]);
      // The guest writes over NBD meanwhile (qemu-io through QEMU's nbd driver): writes, zeroes, a discard.
      await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 100000 5000', '-c', 'write -P 0x55 33M 300k', '-c', 'write -z 2M 1M', '-c', 'discard 61M 64k', '-c', `write -P 0x66 ${SIZE - 512} 512`, u]);
      // Incremental backup: the bitmap frozen and served read-only beside the disk (as libvirt's pull mode does).
      d.disableDirtyBitmap('backup');
      o.server.addExport({ name: 'inc', drive: d, readOnly: true, bitmaps: ['backup'] });
      const inc = uri(o.socket, 'inc');
      const map: { offset: number; length: number; type: number }[] = await nbdinfoMap('qemu:dirty-bitmap:backup', inc);
      const dirty = map.filter((e) => e.type === 1);
      expect(dirty.map((e) => [e.offset, e.length])).toEqual([
        [65536, 65536],
        [2 * MiB, MiB],
        [33 * MiB, 320 * 1024],
        [61 * MiB, 65536],
        [SIZE - 65536, 65536],
      ]);
      expect(sha(copy)).not.toBe(await nbdSha(u));
      // Only the dirty extents, read over NBD, onto the full copy.
      const src = await layer.openDrive({ driver: 'nbd', server: { type: 'unix', path: o.socket }, export: 'inc', readOnly: true });
      const fd = fs.openSync(copy, 'r+');
      try {
        for (const e of dirty) fs.writeSync(fd, await src.read(e.offset, e.length), 0, e.length, e.offset);
      } finally {
        fs.closeSync(fd);
        await src.close();
      }
      expect(sha(copy)).toBe(await nbdSha(u));
    } finally {
      await o.server.close();
      await d.close();
    }
  });
  it('BLOCK_STATUS over three contexts, with and without REQ_ONE: per context the same chunks, in the same order, as qemu-nbd -r -A -B', async () => {
    const base = path.join(dir, 'bs-base.qcow2');
    const over = path.join(dir, 'bs-over.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(SIZE)]);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 4M', '-c', 'write -z 8M 1M', base]);
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', over]);
    await ok('qemu-img', ['bitmap', '--add', over, 'b0']);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 1M 192k', '-c', 'write -z 3M 64k', '-c', 'write -P 3 20M 2M', '-c', 'discard 21M 64k', over]);
    const queries = ['qemu:dirty-bitmap:b0', 'base:allocation', 'qemu:allocation-depth'];
    const q = await qemuNbd(['-r', '-A', '-B', 'b0', '-f', 'qcow2', over]);
    const cli = await serve('-r', '-A', '-B', 'b0', '-f', 'qcow2', '-k', path.join(dir, 'bs.sock'), over);
    const theirs = await rawContexts(q.socket, queries);
    const mine = await rawContexts(path.join(dir, 'bs.sock'), queries);
    try {
      expect(mine.selected).toEqual(theirs.selected);
      const cases: [number, number, number][] = [
        [0, SIZE, 0],
        [100_000, 5 * MiB, 0],
        [MiB + 1, 1, 0],
        [0, SIZE, P.NBD_CMD_FLAG_REQ_ONE],
        [3 * MiB, 17 * MiB + 5, P.NBD_CMD_FLAG_REQ_ONE],
        [21 * MiB - 7, 100, P.NBD_CMD_FLAG_REQ_ONE],
      ];
      for (const [offset, length, flags] of cases) {
        const expected = await theirs.blockStatus(offset, length, flags);
        expect(expected.map((c) => c.context)).toEqual(['base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:b0']);
        expect(await mine.blockStatus(offset, length, flags), `${offset}+${length} flags ${flags}`).toEqual(expected);
      }
    } finally {
      theirs.close();
      mine.close();
      await q.stop();
      cli.child.kill('SIGTERM');
      await cli.exited;
    }
  });
});

/** sha256 of a whole export as nbdcopy reads it. */
async function nbdSha(u: string): Promise<string> {
  const out = path.join(dir, `whole-${Math.random().toString(36).slice(2, 8)}.raw`);
  await ok('nbdcopy', [u, out]);
  const h = createHash('sha256').update(fs.readFileSync(out)).digest('hex');
  fs.rmSync(out);
  return h;
}