// Dirty bitmaps and allocation depth over NBD, judged by clients nobody here wrote (nbdinfo,
// qemu-img map over the nbd driver) against what QEMU's own server (qemu-nbd -B / -A) serves.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, NbdServer } from '../../src/index.js';
import { haveQemuTools } from '../helpers/qemu-images.js';
import { serve } from '../helpers/serve-process.js';
import { haveProgram, ok } from '../helpers/tools.js';

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
      expect(await qemuImgMap(o.socket, 'qemu:dirty-bitmap:b0')).toEqual(await qemuImgMap(q.socket, 'qemu:dirty-bitmap:b0'));
      expect(d.dirtyBitmaps()[0]?.busy).toBe(true);
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
});
