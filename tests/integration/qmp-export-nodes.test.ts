// block-export-add on a node added with blockdev-add, query-block-exports and BLOCK_EXPORT_DELETED,
// against qemu-storage-daemon: the same script, the same replies and events; the export read and
// written by qemu-io and nbdinfo.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NbdExportManager } from '../../src/qmp/exports.js';
import { type QmpClient, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { qsdSuite } from '../helpers/qsd-suite.js';
import { haveProgram, ok } from '../helpers/tools.js';

const suite = qsdSuite('qmp-export-nodes-', { nbd: true });

const have = haveProgram('qemu-storage-daemon') && haveProgram('qemu-io') && haveProgram('nbdinfo');

/** Runs the script on one daemon whose images are in `at` and NBD socket at `sock`; returns replies, events and what clients saw. */
async function scenario(qmp: QmpClient, at: string, sock: string) {
  const out: unknown[] = [];
  const step = async (c: string, a?: Record<string, unknown>) => out.push(await qmp.cmd(c, a));
  await step('blockdev-add', { driver: 'qcow2', 'node-name': 'q1', file: { driver: 'file', 'node-name': 'f1', filename: join(at, 'disk.qcow2') } });
  await step('block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'q1', name: 'disk', writable: true });
  await step('blockdev-add', { driver: 'null-co', 'node-name': 'n0', size: 1048576 });
  await step('block-export-add', { type: 'nbd', id: 'e2', 'node-name': 'n0', name: 'zero', writable: true });
  await step('block-export-add', { type: 'nbd', id: 'e2', 'node-name': 'n0', name: 'zero2' });
  await step('block-export-add', { type: 'nbd', id: 'e4', 'node-name': 'n0', name: 'zero' });
  await step('block-export-add', { type: 'nbd', id: 'e3', 'node-name': 'nosuch' });
  await step('query-block-exports');
  await step('blockdev-del', { 'node-name': 'q1' });
  const uri = (name: string) => `nbd+unix:///${name}?socket=${sock}`;
  await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 64k 64k', uri('disk')]);
  const info = JSON.parse(await ok('nbdinfo', ['--json', uri('disk')])) as { exports: { 'export-size': number; 'is_read_only': boolean }[] };
  const seen = { size: info.exports[0]!['export-size'], ro: info.exports[0]!.is_read_only };
  const nodes = ((await qmp.ok('query-named-block-nodes')) as { 'node-name': string }[]).map((n) => n['node-name']).filter((n) => !n.startsWith('#'));
  await step('block-export-del', { id: 'e1' });
  await step('block-export-del', { id: 'e2' });
  await step('block-export-del', { id: 'e1' });
  await step('query-block-exports');
  await step('blockdev-del', { 'node-name': 'q1' });
  await step('blockdev-del', { 'node-name': 'n0' });
  await step('query-named-block-nodes');
  return { out, seen, nodes: nodes.sort(), events: qmp.events };
}

describe('exports of added nodes against qemu-storage-daemon', () => {
  it.skipIf(!have)('exports a blockdev-add node, lists it, refuses to delete it while exported, sends BLOCK_EXPORT_DELETED', { timeout: 60_000 }, async () => {
    const images: Record<string, string> = {};
    for (const who of ['qsd', 'ours']) {
      const at = join(suite.dir, who);
      mkdirSync(at);
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(at, 'disk.qcow2'), '1M']);
      images[who] = join(at, 'disk.qcow2');
    }
    const qsdSock = join(suite.dir, 'qsd-nbd.sock');
    const qsd = await startQsd(suite.dir, ['--nbd-server', `addr.type=unix,addr.path=${qsdSock}`]);
    suite.daemons.push(qsd);
    const theirs = await scenario(qsd.qmp, join(suite.dir, 'qsd'), qsdSock);
    const ourSock = join(suite.dir, 'our-nbd.sock');
    await suite.nbd.listen({ path: ourSock });
    const ours = await startOurQmp(suite.layer, suite.dir, { exports: new NbdExportManager(suite.layer, suite.nbd) });
    suite.daemons.push(ours);
    const mine = await scenario(ours.qmp, join(suite.dir, 'ours'), ourSock);
    expect(mine.out).toEqual(theirs.out);
    expect(mine.events).toEqual(theirs.events);
    expect(mine.seen).toEqual(theirs.seen);
    expect(mine.nodes).toEqual(theirs.nodes);
    expect(theirs.events).toEqual([{ event: 'BLOCK_EXPORT_DELETED', data: { id: 'e1' } }, { event: 'BLOCK_EXPORT_DELETED', data: { id: 'e2' } }]);
    // The writes through our export reached the image, as through theirs.
    await ok('qemu-img', ['compare', images.qsd!, images.ours!]);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x5a 64k 64k', images.ours!]);
  });
});
