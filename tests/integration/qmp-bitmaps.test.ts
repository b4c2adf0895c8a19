import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, QmpServer } from '../../src/index.js';
import { startQemuDaemon, stopPid } from '../helpers/qemu-daemons.js';
import { execFileSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { haveProgram, ok } from '../helpers/tools.js';
import { QmpClient as Qmp } from '../helpers/qmp-client.js';


let dir: string;
let layer: BlockLayer;
let server: QmpServer | undefined;
const cleanups: (() => unknown)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-bitmaps-'));
  layer = new BlockLayer();
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await server?.close();
  server = undefined;
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

const MiB = 1 << 20;

/** Our server with null drives `d0` (node n0, 1 MiB) and `d1` (node n1, 2 MiB). */
async function ours(): Promise<{ qmp: Qmp; drives: Drive[] }> {
  const drives = [await layer.openDrive({ id: 'd0', driver: 'null', size: MiB, nodeName: 'n0' }), await layer.openDrive({ id: 'd1', driver: 'null', size: 2 * MiB, nodeName: 'n1' })];
  server = new QmpServer(layer);
  const path = join(dir, 'ours.sock');
  await server.listen({ path });
  const qmp = await Qmp.connect(path);
  cleanups.push(() => qmp.close());
  return { qmp, drives };
}

/** The dirty-bitmaps of every node that has some, by node name, from query-named-block-nodes. */
async function bitmapsByNode(qmp: Qmp): Promise<Record<string, unknown>> {
  const nodes = (await qmp.cmd('query-named-block-nodes')).return as Record<string, unknown>[];
  const out: Record<string, unknown> = {};
  for (const n of nodes) if (n['dirty-bitmaps'] !== undefined) out[n['node-name'] as string] = n['dirty-bitmaps'];
  return out;
}

describe('QMP dirty bitmap commands over a socket', () => {
  it('add, write, enable/disable, merge, clear and remove show in query-named-block-nodes and the Drive API', async () => {
    const { qmp, drives } = await ours();
    const d0 = drives[0]!;
    expect(await qmp.cmd('block-dirty-bitmap-add', { node: 'n0', name: 'a' })).toEqual({ return: {} });
    // a drive id names the drive's node too (QEMU: a device name)
    expect(await qmp.cmd('block-dirty-bitmap-add', { node: 'd0', name: 'b', granularity: 512, disabled: true })).toEqual({ return: {} });
    await d0.write(4096, new Uint8Array(8192));
    expect(await bitmapsByNode(qmp)).toEqual({
      n0: [
        { name: 'b', count: 0, granularity: 512, recording: false, busy: false, persistent: false },
        { name: 'a', count: 65536, granularity: 65536, recording: true, busy: false, persistent: false },
      ],
    });
    expect(await qmp.cmd('block-dirty-bitmap-enable', { node: 'n0', name: 'b' })).toEqual({ return: {} });
    await d0.write(MiB - 512, new Uint8Array(512));
    expect(d0.dirtyBitmaps().map((b) => [b.name, b.count, b.recording])).toEqual([
      ['a', 2 * 65536, true],
      ['b', 512, true],
    ]);
    expect(await qmp.cmd('block-dirty-bitmap-merge', { node: 'n0', target: 'b', bitmaps: ['a'] })).toEqual({ return: {} });
    expect(d0.dirtyBitmaps()[1]!.count).toBe(2 * 65536);
    const extents: { offset: number; length: number }[] = [];
    for await (const e of d0.dirtyExtents('b')) extents.push(e);
    expect(extents).toEqual([
      { offset: 0, length: 65536 },
      { offset: MiB - 65536, length: 65536 },
    ]);
    expect(await qmp.cmd('block-dirty-bitmap-disable', { node: 'n0', name: 'a' })).toEqual({ return: {} });
    expect(await qmp.cmd('block-dirty-bitmap-clear', { node: 'n0', name: 'a' })).toEqual({ return: {} });
    await d0.write(0, new Uint8Array(512));
    expect(d0.dirtyBitmaps().map((b) => [b.name, b.count, b.recording])).toEqual([
      ['a', 0, false],
      ['b', 2 * 65536, true],
    ]);
    expect(await qmp.cmd('block-dirty-bitmap-remove', { node: 'd0', name: 'a' })).toEqual({ return: {} });
    expect(await qmp.cmd('block-dirty-bitmap-remove', { node: 'n0', name: 'b' })).toEqual({ return: {} });
    expect(await bitmapsByNode(qmp)).toEqual({});
    // query-block shows them in `inserted`, as QEMU 7.2 does
    d0.addDirtyBitmap('c');
    const block = (await qmp.cmd('query-block')).return as { device: string; inserted: Record<string, unknown> }[];
    expect(block.find((b) => b.device === 'd0')!.inserted['dirty-bitmaps']).toEqual([{ name: 'c', count: 0, granularity: 65536, recording: true, busy: false, persistent: false }]);
  });

  it('a busy bitmap refuses every command but enable/disable of nothing; a merge from another node of the same size works', async () => {
    const { qmp, drives } = await ours();
    const d2 = await layer.openDrive({ id: 'd2', driver: 'null', size: MiB, nodeName: 'n2' });
    d2.addDirtyBitmap('src', { granularity: 4096 });
    await d2.write(8192, new Uint8Array(4096));
    drives[0]!.addDirtyBitmap('t');
    expect(await qmp.cmd('block-dirty-bitmap-merge', { node: 'n0', target: 't', bitmaps: [{ node: 'n2', name: 'src' }] })).toEqual({ return: {} });
    expect(drives[0]!.dirtyBitmaps()[0]!.count).toBe(65536);
    drives[0]!.bitmapNode.bitmaps.get('t').acquire();
    const busy = { error: { class: 'GenericError', desc: "Bitmap 't' is currently in use by another operation and cannot be used" } };
    for (const command of ['block-dirty-bitmap-clear', 'block-dirty-bitmap-enable', 'block-dirty-bitmap-disable', 'block-dirty-bitmap-remove']) {
      expect(await qmp.cmd(command, { node: 'n0', name: 't' })).toEqual(busy);
    }
    expect(await qmp.cmd('block-dirty-bitmap-merge', { node: 'n0', target: 't', bitmaps: [{ node: 'n2', name: 'src' }] })).toEqual(busy);
    expect((await bitmapsByNode(qmp)).n0).toEqual([{ name: 't', count: 65536, granularity: 65536, recording: true, busy: true, persistent: false }]);
  });

  it('transaction is all or nothing: a failing action rolls back clear, merge, disable, enable and add, and keeps a removed bitmap', async () => {
    const { qmp, drives } = await ours();
    const d0 = drives[0]!;
    d0.addDirtyBitmap('a', { granularity: 4096 });
    d0.addDirtyBitmap('b', { granularity: 4096, disabled: true });
    await d0.write(0, new Uint8Array(4096));
    d0.bitmapNode.bitmaps.get('b').markDirty(65536, 4096);
    const before = await bitmapsByNode(qmp);
    const answer = await qmp.cmd('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-add', data: { node: 'n0', name: 'new' } },
        { type: 'block-dirty-bitmap-clear', data: { node: 'n0', name: 'a' } },
        { type: 'block-dirty-bitmap-merge', data: { node: 'n0', target: 'b', bitmaps: ['a'] } },
        { type: 'block-dirty-bitmap-disable', data: { node: 'n0', name: 'a' } },
        { type: 'block-dirty-bitmap-enable', data: { node: 'n0', name: 'b' } },
        { type: 'block-dirty-bitmap-remove', data: { node: 'd0', name: 'b' } },
        { type: 'abort', data: {} },
      ],
    });
    expect(answer).toEqual({ error: { class: 'GenericError', desc: 'Transaction aborted using Abort action' } });
    expect(await bitmapsByNode(qmp)).toEqual(before);
    // the same actions without abort are all done
    const done = await qmp.cmd('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-add', data: { node: 'n0', name: 'new', granularity: 4096 } },
        { type: 'block-dirty-bitmap-merge', data: { node: 'n0', target: 'new', bitmaps: ['a', 'b'] } },
        { type: 'block-dirty-bitmap-clear', data: { node: 'n0', name: 'a' } },
        { type: 'block-dirty-bitmap-remove', data: { node: 'n0', name: 'b' } },
      ],
    });
    expect(done).toEqual({ return: {} });
    expect(d0.dirtyBitmaps().map((b) => [b.name, b.count])).toEqual([
      ['a', 0],
      ['new', 8192],
    ]);
    // a removed bitmap is busy for the rest of its transaction
    expect(
      await qmp.cmd('transaction', {
        actions: [
          { type: 'block-dirty-bitmap-remove', data: { node: 'n0', name: 'a' } },
          { type: 'block-dirty-bitmap-enable', data: { node: 'n0', name: 'a' } },
        ],
      }),
    ).toEqual({ error: { class: 'GenericError', desc: "Bitmap 'a' is currently in use by another operation and cannot be used" } });
    expect(d0.dirtyBitmaps().map((b) => [b.name, b.busy])).toEqual([
      ['a', false],
      ['new', false],
    ]);
  });
});

/** One step of the comparison: a command, a guest write on n0, or a look at every node's bitmaps. */
type Step = { qmp: string; args?: Record<string, unknown> } | { write: [offset: number, length: number] } | { bitmaps: true };

const gran = (g: unknown) => ({ qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 'g', granularity: g } });
const tx = (...actions: unknown[]): Step => ({ qmp: 'transaction', args: { actions } });
const act = (type: string, data: Record<string, unknown>) => ({ type, data });

/** The same sequence for qemu-storage-daemon and for us: every answer must be equal. */
const SEQUENCE: Step[] = [
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 'b0' } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 'b0' } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'nx', name: 'b0' } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: '' } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0' } },
  { qmp: 'block-dirty-bitmap-add', args: { name: 'x' } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 5 } },
  gran(1000),
  gran(256),
  gran(-1),
  gran(1.5),
  gran(4294967296),
  gran('x'),
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 'p', persistent: true } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 'p', persistent: 'yes' } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 'e', extra: 1 } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 'b'.repeat(1024) } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 'b1', granularity: 512, disabled: true } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n0', name: 'big', granularity: 2 ** 31 } },
  { write: [0, 4096] },
  { write: [MiB - 1, 1] },
  { bitmaps: true },
  { qmp: 'block-dirty-bitmap-enable', args: { node: 'n0', name: 'b1' } },
  { qmp: 'block-dirty-bitmap-enable', args: { node: 'n0', name: 'b1' } },
  { write: [65536 + 100, 1024] },
  { bitmaps: true },
  { qmp: 'block-dirty-bitmap-disable', args: { node: 'nx', name: 'zz' } },
  { qmp: 'block-dirty-bitmap-enable', args: { node: 'n0', name: 'zz' } },
  { qmp: 'block-dirty-bitmap-clear', args: { node: 'n0', name: 'zz' } },
  { qmp: 'block-dirty-bitmap-clear', args: { node: 'n0', name: 'b0', x: 1 } },
  { qmp: 'block-dirty-bitmap-remove', args: { node: 'n0', name: '' } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b1', bitmaps: ['b0'] } },
  { bitmaps: true },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'n1', name: 'c0' } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0', bitmaps: [{ node: 'n1', name: 'c0' }] } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0', bitmaps: [{ node: 'n1', name: 'zz' }] } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0', bitmaps: [{ node: 'nx', name: 'zz' }] } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'zz', bitmaps: ['b1'] } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0', bitmaps: ['b1', 'zz'] } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0', bitmaps: [3] } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0', bitmaps: [{ node: 'n1' }] } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0', bitmaps: [{ node: 'n1', name: 'c0', x: 1 }] } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0', bitmaps: 'b1' } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0' } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'n0', target: 'b0', bitmaps: ['b0', { node: 'n0', name: 'b0' }] } },
  { qmp: 'block-dirty-bitmap-clear', args: { node: 'n0', name: 'b0' } },
  { bitmaps: true },
  tx(act('block-dirty-bitmap-add', { node: 'n0', name: 't1' }), act('block-dirty-bitmap-clear', { node: 'n0', name: 'b1' }), act('block-dirty-bitmap-disable', { node: 'n0', name: 'b1' }), act('abort', {})),
  // (a failing enable/disable inside a transaction, or a merge of no bitmaps, crashes QEMU 7.2: left out)
  tx(act('block-dirty-bitmap-merge', { node: 'n0', target: 'b0', bitmaps: ['b1'] }), act('block-dirty-bitmap-clear', { node: 'n0', name: 'zz' })),
  tx(act('block-dirty-bitmap-merge', { node: 'n0', target: 'b1', bitmaps: ['big'] }), act('abort', {})),
  { bitmaps: true },
  tx(act('block-dirty-bitmap-remove', { node: 'n0', name: 'b1' }), act('block-dirty-bitmap-clear', { node: 'n0', name: 'b1' })),
  tx(act('block-dirty-bitmap-add', { node: 'n0', name: 't1' }), act('block-dirty-bitmap-add', { node: 'n0', name: 't1' })),
  { bitmaps: true },
  tx(act('foo', {})),
  tx(act('block-dirty-bitmap-add', { node: 'n0', name: 't1' }), { type: 'foo' }),
  tx(act('abort', { x: 1 })),
  tx(act('block-dirty-bitmap-add', { node: 'n0' })),
  tx(act('block-dirty-bitmap-add', { node: 'n0', name: 't1', granularity: -1 })),
  tx(act('block-dirty-bitmap-merge', { node: 'n0', target: 'b0', bitmaps: [{ node: 'n0' }] })),
  tx(act('block-dirty-bitmap-merge', { node: 'n0', target: 'b0', bitmaps: [7] })),
  tx({ type: 'block-dirty-bitmap-add' }),
  tx({ data: {} }),
  tx(5),
  tx({ type: 5, data: {} }),
  tx({ type: 'block-dirty-bitmap-add', data: 5 }),
  tx({ ...act('block-dirty-bitmap-add', { node: 'n0', name: 't7' }), x: 2 }),
  { qmp: 'transaction', args: { actions: {} } },
  { qmp: 'transaction', args: {} },
  { qmp: 'transaction', args: { actions: [act('block-dirty-bitmap-add', { node: 'n0', name: 't9' })], properties: { 'completion-mode': 'grouped' } } },
  { qmp: 'transaction', args: { actions: [act('block-dirty-bitmap-add', { node: 'n0', name: 't9' })], properties: { 'completion-mode': 'bogus' } } },
  { qmp: 'transaction', args: { actions: [act('block-dirty-bitmap-add', { node: 'n0', name: 't9' })], properties: { x: 1 } } },
  tx(),
  { bitmaps: true },
  tx(
    act('block-dirty-bitmap-add', { node: 'n0', name: 't2', granularity: 4096 }),
    act('block-dirty-bitmap-merge', { node: 'n0', target: 't2', bitmaps: ['b1', 'b0'] }),
    act('block-dirty-bitmap-clear', { node: 'n0', name: 'b1' }),
    act('block-dirty-bitmap-disable', { node: 'n0', name: 't2' }),
    act('block-dirty-bitmap-remove', { node: 'n0', name: 'b0' }),
  ),
  { qmp: 'transaction', args: { actions: [act('block-dirty-bitmap-add', { node: 'n1', name: 'c1' })], properties: { 'completion-mode': 'individual' } } },
  { write: [3 * 65536, 65536] },
  { bitmaps: true },
  { qmp: 'block-dirty-bitmap-remove', args: { node: 'n0', name: 't2' } },
  { qmp: 'block-dirty-bitmap-remove', args: { node: 'n0', name: 't2' } },
  { qmp: 'block-dirty-bitmap-remove', args: { node: 'nx', name: 't2' } },
  { bitmaps: true },
];

/** Runs the steps through `qmp`, writing with `write`; the answers, in order. */
async function play(qmp: Qmp, write: (offset: number, length: number) => Promise<void>, steps: Step[] = SEQUENCE): Promise<unknown[]> {
  const answers: unknown[] = [];
  for (const step of steps) {
    if ('write' in step) await write(...step.write);
    else if ('bitmaps' in step) answers.push({ bitmaps: await bitmapsByNode(qmp) });
    else answers.push({ [step.qmp]: step.args, answer: await qmp.cmd(step.qmp, step.args) });
  }
  return answers;
}

describe('QMP dirty bitmap commands against qemu-storage-daemon', () => {
  it.skipIf(!haveProgram('qemu-storage-daemon') || !haveProgram('qemu-io'))('answers the same sequence of commands, writes and transactions exactly as QEMU does', { timeout: 60_000 }, async () => {
    const qmpPath = join(dir, 'qsd.sock');
    const nbdPath = join(dir, 'nbd.sock');
    const pid = startQemuDaemon(
      'qemu-storage-daemon',
      [
        '--blockdev', `driver=null-co,node-name=n0,size=${MiB}`,
        '--blockdev', `driver=null-co,node-name=n1,size=${2 * MiB}`,
        '--chardev', `socket,id=m,path=${qmpPath},server=on,wait=off`,
        '--monitor', 'chardev=m',
        '--nbd-server', `addr.type=unix,addr.path=${nbdPath}`,
        '--export', 'type=nbd,id=e0,node-name=n0,name=n0,writable=on',
      ],
      dir,
    );
    cleanups.push(() => stopPid(pid));
    const qsd = await Qmp.connect(qmpPath);
    cleanups.push(() => qsd.close());
    const theirs = await play(qsd, async (offset, length) => {
      await ok('qemu-io', ['-f', 'raw', '-c', `write ${offset} ${length}`, `nbd+unix:///n0?socket=${nbdPath}`]);
    });

    const { qmp, drives } = await ours();
    const mine = await play(qmp, (offset, length) => drives[0]!.write(offset, new Uint8Array(length)));
    expect(mine).toEqual(theirs);
    // the sequence did reach dirty bits and errors on both sides
    expect(JSON.stringify(theirs)).toContain('"count":65536');
    expect(JSON.stringify(theirs)).toContain('Transaction aborted using Abort action');
  });
});

/** Steps on a qcow2 node q0 (file node f0) whose image holds `stale` (in use: inconsistent) and `good`. */
const PERSISTENT: Step[] = [
  { bitmaps: true },
  { qmp: 'block-dirty-bitmap-clear', args: { node: 'q0', name: 'stale' } },
  { qmp: 'block-dirty-bitmap-enable', args: { node: 'q0', name: 'stale' } },
  { qmp: 'block-dirty-bitmap-disable', args: { node: 'q0', name: 'stale' } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'q0', target: 'good', bitmaps: ['stale'] } },
  { qmp: 'block-dirty-bitmap-merge', args: { node: 'q0', target: 'stale', bitmaps: ['good'] } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'q0', name: 'stale', persistent: true } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'q0', name: 'p', persistent: true, granularity: 512 } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'q0', name: 'big', persistent: true, granularity: 2 ** 31 } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'f0', name: 'p', persistent: true } },
  { qmp: 'block-dirty-bitmap-add', args: { node: 'f0', name: 'f' } },
  { bitmaps: true },
  tx(act('block-dirty-bitmap-remove', { node: 'q0', name: 'good' }), act('abort', {})),
  { bitmaps: true },
  { qmp: 'block-dirty-bitmap-remove', args: { node: 'q0', name: 'stale' } },
  { qmp: 'block-dirty-bitmap-remove', args: { node: 'q0', name: 'p' } },
  { qmp: 'block-dirty-bitmap-disable', args: { node: 'q0', name: 'good' } },
  { bitmaps: true },
];

describe('QMP persistent and inconsistent bitmaps against qemu-storage-daemon', () => {
  it.skipIf(!haveProgram('qemu-storage-daemon') || !haveProgram('qemu-img'))(
    'an image left with a bitmap in use: inconsistent, refused for all but removal; persistent adds and removes, as QEMU',
    { timeout: 60_000 },
    async () => {
      // an image whose bitmap `stale` was in use when its user died, and `good` added afterwards
      const img = join(dir, 'crashed.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '4M']);
      execFileSync('qemu-img', ['bitmap', '--add', img, 'stale']);
      const crashed = startQemuDaemon('qemu-storage-daemon', ['--blockdev', `driver=file,node-name=f0,filename=${img}`, '--blockdev', 'driver=qcow2,node-name=q0,file=f0'], dir);
      process.kill(crashed, 'SIGKILL');
      await stopPid(crashed);
      execFileSync('qemu-img', ['bitmap', '--add', '-g', '4k', img, 'good']);
      const theirsImg = join(dir, 'theirs.qcow2');
      const oursImg = join(dir, 'ours.qcow2');
      copyFileSync(img, theirsImg);
      copyFileSync(img, oursImg);

      const qmpPath = join(dir, 'qsd-p.sock');
      const pid = startQemuDaemon(
        'qemu-storage-daemon',
        [
          '--blockdev', `driver=file,node-name=f0,filename=${theirsImg}`,
          '--blockdev', 'driver=qcow2,node-name=q0,file=f0',
          '--chardev', `socket,id=m,path=${qmpPath},server=on,wait=off`,
          '--monitor', 'chardev=m',
        ],
        dir,
      );
      cleanups.push(() => stopPid(pid));
      const qsd = await Qmp.connect(qmpPath);
      cleanups.push(() => qsd.close());
      const noWrites = async () => {};
      const theirs = await play(qsd, noWrites, PERSISTENT);

      await layer.openDrive({ id: 'd0', driver: 'qcow2', nodeName: 'q0', file: { driver: 'file', filename: oursImg, nodeName: 'f0' } });
      server = new QmpServer(layer);
      const path = join(dir, 'ours-p.sock');
      await server.listen({ path });
      const qmp = await Qmp.connect(path);
      cleanups.push(() => qmp.close());
      const mine = await play(qmp, noWrites, PERSISTENT);
      expect(mine).toEqual(theirs);
      expect(JSON.stringify(theirs)).toContain('"inconsistent":true');
      expect(JSON.stringify(theirs)).toContain("Bitmap 'stale' is inconsistent and cannot be used");
      // closed, both images hold the same bitmaps with the same flags
      await stopPid(pid);
      await server.close();
      server = undefined;
      await layer.close();
      // (sorted by name: the directory's order is the qcow2 driver's business)
      const stored = (file: string) =>
        (JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })) as { 'format-specific': { data: { bitmaps: { name: string }[] } } })['format-specific'].data.bitmaps.sort((a, b) =>
          a.name.localeCompare(b.name),
        );
      expect(stored(oursImg)).toEqual(stored(theirsImg));
      expect(stored(oursImg)).toEqual([
        { name: 'big', granularity: 2 ** 31, flags: ['auto'] },
        { name: 'good', granularity: 4096, flags: [] },
      ]);
    },
  );
});
