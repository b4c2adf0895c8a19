// blockdev-snapshot-sync, blockdev-snapshot and transactions of them against qemu-storage-daemon:
// the same script while an NBD client writes, the same replies, the same chains and layers
// (qemu-img info --backing-chain, compare, qemu-io reads of the base as of the snapshot).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NbdExportManager } from '../../src/qmp/exports.js';
import { type QmpClient, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { qsdSuite } from '../helpers/qsd-suite.js';
import { haveProgram, ok, run } from '../helpers/tools.js';

const suite = qsdSuite('qmp-snapshot-', { nbd: true });

const have = haveProgram('qemu-storage-daemon') && haveProgram('qemu-io') && haveProgram('qemu-img');

async function prepareImages(at: string): Promise<void> {
  mkdirSync(at);
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(at, 'base.qcow2'), '1M']);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', join(at, 'base.qcow2')]);
  await ok('qemu-img', ['create', '-q', '-f', 'raw', join(at, 'raw.img'), '1M']);
}

/** The script on one daemon: images in `at`, NBD socket `sock`. */
async function scenario(qmp: QmpClient, at: string, sock: string) {
  const out: unknown[] = [];
  const step = async (c: string, a?: Record<string, unknown>) => out.push(await qmp.cmd(c, a));
  const uri = (name: string) => `nbd+unix:///${name}?socket=${sock}`;
  const write = (pattern: number, offset: string) => ok('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} 64k`, uri('disk')]);
  await step('blockdev-add', { driver: 'qcow2', 'node-name': 'q1', file: { driver: 'file', filename: join(at, 'base.qcow2') } });
  await step('blockdev-add', { driver: 'raw', 'node-name': 'r1', file: { driver: 'file', filename: join(at, 'raw.img') } });
  await step('block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'q1', name: 'disk', writable: true });
  await step('block-export-add', { type: 'nbd', id: 'e2', 'node-name': 'r1', name: 'raw', writable: true });
  await write(0x22, '0');
  const s1 = join(at, 's1.qcow2');
  await step('blockdev-snapshot-sync', { 'snapshot-file': s1 });
  await step('blockdev-snapshot-sync', { 'node-name': 'nosuch', 'snapshot-file': s1, 'snapshot-node-name': 's1' });
  await step('blockdev-snapshot-sync', { device: 'nosuch', 'snapshot-file': s1 });
  await step('blockdev-snapshot-sync', { 'node-name': 'q1' });
  await step('blockdev-snapshot-sync', { 'node-name': 'q1', 'snapshot-file': s1 });
  await step('blockdev-snapshot-sync', { 'node-name': 'q1', 'snapshot-file': s1, 'snapshot-node-name': 'r1' });
  await step('blockdev-snapshot-sync', { 'node-name': 'q1', 'snapshot-file': s1, 'snapshot-node-name': 's1', mode: 'bad' });
  await step('blockdev-snapshot-sync', { 'node-name': 'q1', 'snapshot-file': join(at, 'nope.qcow2'), 'snapshot-node-name': 's1', mode: 'existing' });
  await step('blockdev-snapshot-sync', { 'node-name': 'q1', 'snapshot-file': s1, 'snapshot-node-name': 's1', x: 1 });
  // The snapshot while a client writes elsewhere: each write lands below or above, the disk reads the same.
  const writer = ok('qemu-io', ['-f', 'raw', ...Array.from({ length: 20 }, (_, i) => ['-c', `write -P 0x33 ${512 + i * 4}k 4k`]).flat(), uri('disk')]);
  await step('blockdev-snapshot-sync', { 'node-name': 'q1', 'snapshot-file': s1, 'snapshot-node-name': 's1' });
  await writer;
  await write(0x44, '256k');
  await step('query-block-exports');
  // blockdev-snapshot with an overlay added without its backing.
  const ov2 = join(at, 'ov2.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', s1, '-F', 'qcow2', ov2]);
  await step('blockdev-add', { driver: 'qcow2', 'node-name': 'o2', backing: null, file: { driver: 'file', filename: ov2 } });
  await step('blockdev-snapshot', { node: 's1', overlay: 'nosuch' });
  await step('blockdev-snapshot', { node: 'nosuch', overlay: 'o2' });
  await step('blockdev-snapshot', { node: 's1', overlay: 'r1' });
  await step('blockdev-snapshot', { node: 's1' });
  await step('blockdev-snapshot', { node: 's1', overlay: 'o2' });
  await step('blockdev-snapshot', { node: 's1', overlay: 'o2' });
  await write(0x55, '320k');
  // A transaction that fails changes nothing; one that succeeds takes both snapshots and the bitmap.
  const t1 = join(at, 't1.qcow2');
  const t2 = join(at, 't2.qcow2');
  const snap = (node: string, file: string, name: string) => ({ type: 'blockdev-snapshot-sync', data: { 'node-name': node, 'snapshot-file': file, 'snapshot-node-name': name } });
  await step('transaction', { actions: [snap('o2', t1, 't1'), { type: 'block-dirty-bitmap-add', data: { node: 'o2', name: 'b0' } }, snap('nosuch', t2, 't2')] });
  await step('transaction', { actions: [snap('o2', t1, 't1'), snap('r1', t2, 't1')] });
  await step('query-block-exports');
  await step('transaction', { actions: [snap('o2', t1, 't1'), snap('r1', t2, 't2'), { type: 'block-dirty-bitmap-add', data: { node: 'o2', name: 'b0' } }] });
  await step('query-block-exports');
  await write(0x66, '384k');
  await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 64k', uri('raw')]);
  const nodes = ((await qmp.ok('query-named-block-nodes')) as { 'node-name': string }[]).map((n) => n['node-name']).filter((n) => !n.startsWith('#'));
  await step('block-export-del', { id: 'e1' });
  await step('block-export-del', { id: 'e2' });
  return { out, nodes: nodes.sort(), events: qmp.events };
}

/** One layer of a qcow2 chain as itself (no backing), for qemu-img. */
const alone = (file: string) => `json:${JSON.stringify({ driver: 'qcow2', backing: null, file: { driver: 'file', filename: file } })}`;

describe('external snapshots against qemu-storage-daemon', () => {
  it.skipIf(!have)('takes blockdev-snapshot-sync, blockdev-snapshot and transactions of them as QEMU does', { timeout: 120_000 }, async () => {
    const qsdAt = join(suite.dir, 'qsd');
    const ourAt = join(suite.dir, 'ours');
    await prepareImages(qsdAt);
    await prepareImages(ourAt);
    const qsdSock = join(suite.dir, 'qsd-nbd.sock');
    const qsd = await startQsd(suite.dir, ['--nbd-server', `addr.type=unix,addr.path=${qsdSock}`]);
    suite.daemons.push(qsd);
    const theirs = await scenario(qsd.qmp, qsdAt, qsdSock);
    await qsd.stop();
    const ourSock = join(suite.dir, 'our-nbd.sock');
    await suite.nbd.listen({ path: ourSock });
    const ours = await startOurQmp(suite.layer, suite.dir, { exports: new NbdExportManager(suite.layer, suite.nbd) });
    suite.daemons.push(ours);
    const mine = await scenario(ours.qmp, ourAt, ourSock);
    await ours.stop();
    await suite.layer.close();
    const norm = (v: unknown, at: string) => JSON.parse(JSON.stringify(v).replaceAll(at, '@'));
    expect(norm(mine.out, ourAt)).toEqual(norm(theirs.out, qsdAt));
    expect(mine.events).toEqual(theirs.events);
    expect(mine.nodes).toEqual(theirs.nodes);
    // The same chains, file by file.
    const chain = async (at: string) => norm(JSON.parse(await ok('qemu-img', ['info', '--output=json', '--backing-chain', join(at, 't1.qcow2')])).map((i: Record<string, unknown>) => [i.filename, i['backing-filename'], i['virtual-size']]), at);
    expect(await chain(ourAt)).toEqual(await chain(qsdAt));
    expect((await chain(ourAt)).map((c: string[]) => c[0])).toEqual(['@/t1.qcow2', '@/ov2.qcow2', '@/s1.qcow2', '@/base.qcow2']);
    // Layers above the snapshot hold the same data; base and s1 read the same together (the racing writes may land in either).
    for (const f of ['t1.qcow2', 'ov2.qcow2']) await ok('qemu-img', ['compare', alone(join(qsdAt, f)), alone(join(ourAt, f))]);
    await ok('qemu-img', ['compare', join(qsdAt, 's1.qcow2'), join(ourAt, 's1.qcow2')]);
    await ok('qemu-img', ['compare', join(qsdAt, 't2.qcow2'), join(ourAt, 't2.qcow2')]);
    // The base is the disk as of the snapshot: the write before it, none after.
    const base = join(ourAt, 'base.qcow2');
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x22 0 64k', '-c', 'read -P 0x11 256k 192k', base]);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x66 384k 64k', '-c', 'read -P 0x55 320k 64k', '-c', 'read -P 0x44 256k 64k', '-c', 'read -P 0x33 512k 80k', join(ourAt, 't1.qcow2')]);
    // The raw disk's snapshot took the later write; the raw file did not.
    expect((await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0 0 64k', join(ourAt, 'raw.img')])).stdout).not.toMatch(/Pattern verification failed/);
    for (const at of [qsdAt, ourAt]) await ok('qemu-img', ['check', join(at, 't1.qcow2')]);
  });

  it.skipIf(!have)('pivots a drive named by device to the overlay: later writes land there, the base keeps the snapshot', { timeout: 60_000 }, async () => {
    const base = join(suite.dir, 'd.qcow2');
    const top = join(suite.dir, 'd-top.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', base, '1M']);
    const d = await suite.layer.openDrive({ id: 'd0', driver: 'qcow2', nodeName: 'b0', file: { driver: 'file', filename: base } });
    await d.write(0, Buffer.alloc(65536, 0xaa));
    const ours = await startOurQmp(suite.layer, suite.dir);
    suite.daemons.push(ours);
    expect(await ours.qmp.cmd('blockdev-snapshot-sync', { device: 'd0', 'snapshot-file': top, 'snapshot-node-name': 'o0' })).toEqual({ return: {} });
    expect(d.node.name).toBe('o0');
    await d.write(65536, Buffer.alloc(65536, 0xbb));
    await d.flush();
    const blocks = (await ours.qmp.ok('query-block')) as { device: string; inserted: { 'node-name': string; backing_file_depth: number } }[];
    expect(blocks.map((b) => [b.device, b.inserted['node-name'], b.inserted.backing_file_depth])).toEqual([['d0', 'o0', 1]]);
    await ours.stop();
    suite.daemons.splice(0);
    await d.close();
    const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', '--backing-chain', top])) as { filename: string; 'backing-filename'?: string }[];
    expect(info.map((i) => i.filename)).toEqual([top, base]);
    expect(info[0]!['backing-filename']).toBe(base);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xaa 0 64k', '-c', 'read -P 0 64k 64k', base]);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xaa 0 64k', '-c', 'read -P 0xbb 64k 64k', top]);
    await ok('qemu-img', ['check', top]);
  });
});
