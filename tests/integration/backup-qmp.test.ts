// blockdev-backup over QMP against qemu-storage-daemon: the same script (a transaction with a
// dirty bitmap and a full backup, writes by qemu-io over NBD, an incremental backup with the
// bitmap, argument errors) on both daemons; events compared, targets compared with qemu-img
// compare. And a backup of a drive exported over NBD while qemu-io writes to it: the target is
// the image as it was when the job started.
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer, NbdServer } from '../../src/index.js';
import { type QmpClient, type QmpDaemon, type QmpEvent, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveProgram, ok, run } from '../helpers/tools.js';

const HAVE = haveProgram('qemu-storage-daemon') && haveProgram('qemu-img') && haveProgram('qemu-io');
const SIZE = 4 * 1024 * 1024;

let dir: string;
const daemons: QmpDaemon[] = [];
const layers: BlockLayer[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'backup-qmp-'));
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  for (const l of layers.splice(0)) await l.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Makes `<name>.qcow2` images in `sub` for one daemon: a source with data and empty targets. */
async function images(sub: string): Promise<void> {
  await ok('mkdir', ['-p', join(dir, sub)]);
  for (const name of ['src', 'full', 'inc', 'small']) await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, sub, `${name}.qcow2`), name === 'small' ? '1M' : String(SIZE)]);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 3M 512k', join(dir, sub, 'src.qcow2')]);
  copyFileSync(join(dir, sub, 'src.qcow2'), join(dir, sub, 'src-at-start.qcow2'));
}

const nbdUri = (sock: string) => `nbd+unix:///src?socket=${sock}`;

/** The job events of a run, in order (QEMU's JOB_STATUS_CHANGE and BLOCK_JOB_*). */
const jobEvents = (events: readonly QmpEvent[]) => events.filter((e) => e.event === 'JOB_STATUS_CHANGE' || e.event.startsWith('BLOCK_JOB_'));

const BAD: [string, Record<string, unknown>][] = [
  ['blockdev-backup', { device: 'src', target: 'full' }],
  ['blockdev-backup', { device: 'src', sync: 'full' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'bogus' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'incremental' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', bitmap: 'nope' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', bitmap: 'b0' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'none', bitmap: 'b0', 'bitmap-mode': 'on-success' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', bitmap: 'b0', 'bitmap-mode': 'never' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'incremental', bitmap: 'b0', 'bitmap-mode': 'always' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', 'bitmap-mode': 'always' }],
  ['blockdev-backup', { device: 'src', target: 'small', sync: 'full', 'job-id': 'x' }],
  ['blockdev-backup', { device: 'src', target: 'src', sync: 'full' }],
  ['blockdev-backup', { device: 'nope', target: 'full', sync: 'full' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', speed: 'x' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', 'job-id': 'x', 'x-perf': { 'max-workers': 0 } }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', 'job-id': 'x', 'x-perf': { 'max-chunk': -1 } }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', 'job-id': 'x', foo: 1 }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', 'job-id': '1x' }],
  ['blockdev-backup', { device: 'src', target: 'full', sync: 'full', 'job-id': 'x', 'filter-node-name': 'src' }],
  ['transaction', { actions: [{ type: 'blockdev-backup', data: { device: 'src', target: 'full', sync: 'full', 'job-id': 'x' } }, { type: 'abort', data: {} }] }],
];

/** The script both daemons run; returns the replies. */
async function script(qmp: QmpClient, sock: string): Promise<unknown[]> {
  const replies: unknown[] = [];
  const cmd = async (c: string, a?: Record<string, unknown>) => {
    const r = await qmp.cmd(c, a);
    replies.push(r.error ?? r.return);
    if (process.env.BACKUP_DEBUG) console.log(c, JSON.stringify(a), JSON.stringify(r));
    return r;
  };
  await cmd('block-dirty-bitmap-add', { node: 'src', name: 'b0', granularity: 65536 });
  for (const [c, a] of BAD) await cmd(c, a);
  await cmd('block-dirty-bitmap-remove', { node: 'src', name: 'b0' });
  await cmd('transaction', {
    actions: [
      { type: 'block-dirty-bitmap-add', data: { node: 'src', name: 'b0', granularity: 65536 } },
      { type: 'blockdev-backup', data: { 'job-id': 'full', device: 'src', target: 'full', sync: 'full' } },
    ],
  });
  await qmp.waitJobStatus('full', 'null');
  await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0xaa 100k 10k', '-c', 'write -P 0xbb 2M 64k', '-c', 'write -z 3M 4k', nbdUri(sock)]);
  await cmd('blockdev-backup', { 'job-id': 'inc', device: 'src', target: 'inc', sync: 'incremental', bitmap: 'b0', 'auto-dismiss': false });
  await qmp.waitJobStatus('inc', 'concluded');
  await cmd('query-block-jobs');
  await cmd('job-dismiss', { id: 'inc' });
  // The bitmap was cleared on success: a second incremental backup copies nothing.
  await cmd('blockdev-backup', { 'job-id': 'inc2', device: 'src', target: 'inc', sync: 'incremental', bitmap: 'b0' });
  await qmp.waitJobStatus('inc2', 'null');
  return replies;
}

describe('blockdev-backup against qemu-storage-daemon', () => {
  it.skipIf(!HAVE)('the same script gives the same replies, the same job events and the same targets', { timeout: 120_000 }, async () => {
    await images('q');
    await images('o');
    const qsock = join(dir, 'q.nbd');
    const blockdevs = (sub: string) =>
      ['src', 'full', 'inc', 'small'].flatMap((n) => ['--blockdev', `driver=qcow2,node-name=${n},file.driver=file,file.filename=${join(dir, sub, `${n}.qcow2`)}`]);
    const qsd = await startQsd(dir, [...blockdevs('q'), '--nbd-server', `addr.type=unix,addr.path=${qsock}`, '--export', 'type=nbd,id=e0,node-name=src,name=src,writable=on']);
    daemons.push(qsd);
    const theirs = await script(qsd.qmp, qsock);
    const theirEvents = jobEvents(qsd.qmp.events);
    await daemons.pop()!.stop();

    const layer = new BlockLayer();
    layers.push(layer);
    for (const n of ['src', 'full', 'inc', 'small']) await layer.addNode({ driver: 'qcow2', nodeName: n, file: { driver: 'file', filename: join(dir, 'o', `${n}.qcow2`) } } as never);
    const osock = join(dir, 'o.nbd');
    const nbd = new NbdServer({ exports: [{ name: 'src', drive: layer.attachDrive('src', { internal: true }) }] });
    await nbd.listen({ path: osock });
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    const mine = await script(ours.qmp, osock);
    const myEvents = jobEvents(ours.qmp.events);
    await daemons.pop()!.stop();
    await nbd.close();
    await layers.pop()!.close();

    expect(mine).toEqual(theirs);
    expect(myEvents).toEqual(theirEvents);
    expect(JSON.stringify(theirEvents)).toContain('"len":196608');
    for (const name of ['full', 'inc', 'src']) await ok('qemu-img', ['compare', '-q', join(dir, 'q', `${name}.qcow2`), join(dir, 'o', `${name}.qcow2`)]);
    for (const name of ['full', 'inc']) await ok('qemu-img', ['check', '-q', join(dir, 'o', `${name}.qcow2`)]);
    // The full backup is the source as it was before the writes.
    await ok('qemu-img', ['compare', '-q', join(dir, 'o', 'src-at-start.qcow2'), join(dir, 'o', 'full.qcow2')]);
  });
});

describe('backup of a drive exported over NBD while a client writes', () => {
  it.skipIf(!HAVE)('the target is the image as it was when the job started', { timeout: 120_000 }, async () => {
    await images('o');
    const layer = new BlockLayer();
    layers.push(layer);
    for (const n of ['src', 'full']) await layer.addNode({ driver: 'qcow2', nodeName: n, file: { driver: 'file', filename: join(dir, 'o', `${n}.qcow2`) } } as never);
    const sock = join(dir, 'o.nbd');
    const nbd = new NbdServer({ exports: [{ name: 'src', drive: layer.attachDrive('src', { internal: true }) }] });
    await nbd.listen({ path: sock });
    // 2 MiB/s over 4 MiB: two seconds in which qemu-io rewrites the whole disk.
    const job = await layer.startJob({ type: 'backup', jobId: 'b', device: 'src', target: 'full', sync: 'full', speed: 2 * 1024 * 1024, perf: { maxChunk: 64 * 1024 } });
    const writes = ['-c', 'write -P 0x55 0 4M', '-c', 'write -P 0x66 64k 1M', '-c', 'write -z 3M 256k', '-c', 'discard 2M 64k'];
    const io = await run('qemu-io', ['-f', 'raw', ...writes, nbdUri(sock)]);
    expect(io.code).toBe(0);
    await job.wait();
    await nbd.close();
    await layers.pop()!.close();
    await ok('qemu-img', ['compare', '-q', join(dir, 'o', 'src-at-start.qcow2'), join(dir, 'o', 'full.qcow2')]);
    await ok('qemu-img', ['check', '-q', join(dir, 'o', 'full.qcow2')]);
    // And the source has the client's writes.
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x66 64k 1M', '-c', 'read -P 0 3M 256k', join(dir, 'o', 'src.qcow2')]);
  });
});

/** sync=top of an image over a backing file, then sync=none cancelled after a client's writes. */
async function topAndNone(qmp: QmpClient, sock: string): Promise<unknown[]> {
  const replies: unknown[] = [];
  const cmd = async (c: string, a?: Record<string, unknown>) => replies.push((await qmp.cmd(c, a)).return ?? null);
  await cmd('blockdev-backup', { 'job-id': 'top', device: 'top', target: 'ttop', sync: 'top' });
  await qmp.waitJobStatus('top', 'null');
  await cmd('blockdev-backup', { 'job-id': 'none', device: 'src', target: 'full', sync: 'none' });
  await qmp.waitJobStatus('none', 'running');
  await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0xcc 100k 70k', '-c', 'write -P 0xdd 1M 4k', nbdUri(sock)]);
  await cmd('query-block-jobs');
  await cmd('block-job-cancel', { device: 'none' });
  await qmp.waitJobStatus('none', 'null');
  return replies;
}

describe('blockdev-backup sync=top and sync=none against qemu-storage-daemon', () => {
  it.skipIf(!HAVE)('the same events and the same targets', { timeout: 120_000 }, async () => {
    for (const sub of ['q', 'o']) {
      await images(sub);
      const base = join(dir, sub, 'base.qcow2');
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(SIZE)]);
      await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 4M', base]);
      for (const n of ['top', 'ttop']) await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', join(dir, sub, `${n}.qcow2`)]);
      await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 64k 64k', '-c', 'write -P 0x33 1M 200k', join(dir, sub, 'top.qcow2')]);
    }
    const names = ['src', 'full', 'top', 'ttop'];
    const qsock = join(dir, 'q.nbd');
    const qsd = await startQsd(dir, [
      ...names.flatMap((n) => ['--blockdev', `driver=qcow2,node-name=${n},file.driver=file,file.filename=${join(dir, 'q', `${n}.qcow2`)}`]),
      '--nbd-server',
      `addr.type=unix,addr.path=${qsock}`,
      '--export',
      'type=nbd,id=e0,node-name=src,name=src,writable=on',
    ]);
    daemons.push(qsd);
    const theirs = await topAndNone(qsd.qmp, qsock);
    const theirEvents = qsd.qmp.events.filter((e) => e.event === 'JOB_STATUS_CHANGE' || e.event.startsWith('BLOCK_JOB_'));
    await daemons.pop()!.stop();

    const layer = new BlockLayer();
    layers.push(layer);
    for (const n of names) await layer.addNode({ driver: 'qcow2', nodeName: n, file: { driver: 'file', filename: join(dir, 'o', `${n}.qcow2`) } } as never);
    const osock = join(dir, 'o.nbd');
    const nbd = new NbdServer({ exports: [{ name: 'src', drive: layer.attachDrive('src', { internal: true }) }] });
    await nbd.listen({ path: osock });
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    const mine = await topAndNone(ours.qmp, osock);
    const myEvents = ours.qmp.events.filter((e) => e.event === 'JOB_STATUS_CHANGE' || e.event.startsWith('BLOCK_JOB_'));
    await daemons.pop()!.stop();
    await nbd.close();
    await layers.pop()!.close();

    expect(myEvents).toEqual(theirEvents);
    expect(mine).toEqual(theirs);
    expect(JSON.stringify(theirEvents)).toContain('BLOCK_JOB_CANCELLED');
    for (const name of ['ttop', 'full', 'src']) await ok('qemu-img', ['compare', '-q', join(dir, 'q', `${name}.qcow2`), join(dir, 'o', `${name}.qcow2`)]);
    const maps = await Promise.all(['q', 'o'].map(async (sub) => JSON.parse(await ok('qemu-img', ['map', '--output=json', join(dir, sub, 'ttop.qcow2')])).filter((e: { depth: number }) => e.depth === 0).map((e: { start: number; length: number }) => [e.start, e.length])));
    expect(maps[1]).toEqual(maps[0]);
  });
});
