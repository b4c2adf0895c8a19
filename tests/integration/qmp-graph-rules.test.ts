// Where the node graph's rules met QEMU's only in part (scripts/fuzz-serve.ts --qemu findings),
// with the replies qemu-storage-daemon 7.2 gives. No qemu tools needed: images come from our createImage.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer, createImage, NbdServer } from '../../src/index.js';
import { NbdExportManager } from '../../src/qmp/exports.js';
import { type QmpDaemon, startOurQmp } from '../helpers/qmp-client.js';

let dir: string;
let layer: BlockLayer;
let ours: QmpDaemon | undefined;
let nbd: NbdServer | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-graph-rules-'));
  layer = new BlockLayer();
});

afterEach(async () => {
  await ours?.stop();
  ours = undefined;
  await nbd?.close();
  nbd = undefined;
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

async function qmp() {
  nbd = new NbdServer();
  await nbd.listen({ path: join(dir, 'nbd.sock') });
  ours = await startOurQmp(layer, dir, { exports: new NbdExportManager(layer, nbd) });
  return ours.qmp;
}

const readOnlyNode = { error: { class: 'GenericError', desc: 'Block node is read-only' } };

describe('read-only in the node graph (blockdev-add read-only)', () => {
  it('refuses a read-write qcow2 over a read-only file, given inline, by name or under a raw node: "Block node is read-only"', async () => {
    const q = await qmp();
    const image = join(dir, 'q.qcow2');
    await createImage(image, { format: 'qcow2', size: 1 << 20 });
    const roFile = { driver: 'file', filename: image, 'read-only': true };
    expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'q1', file: roFile })).toEqual(readOnlyNode);
    expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'q2', file: { driver: 'raw', file: roFile } })).toEqual(readOnlyNode);
    expect(await q.cmd('blockdev-add', { ...roFile, 'node-name': 'f' })).toEqual({ return: {} });
    expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'q3', file: 'f' })).toEqual(readOnlyNode);
    // Nothing of the refused opens is left; read-only the same image opens.
    const names = () => q.cmd('query-named-block-nodes', { flat: true }).then((r) => (r.return as { 'node-name': string }[]).map((n) => n['node-name']));
    expect(await names()).toEqual(['f']);
    expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'q4', 'read-only': true, file: 'f' })).toEqual({ return: {} });
  });

  it('opens a read-only raw over a file explicitly read-write (the file is read-write), and a read-write raw over a read-only file', async () => {
    const q = await qmp();
    for (const f of ['a.img', 'b.img']) writeFileSync(join(dir, f), Buffer.alloc(1 << 20));
    const add = { driver: 'raw', 'node-name': 'r1', 'read-only': true, file: { driver: 'file', 'node-name': 'f1', filename: join(dir, 'a.img'), 'read-only': false } };
    expect(await q.cmd('blockdev-add', add)).toEqual({ return: {} });
    expect(await q.cmd('blockdev-add', { driver: 'raw', 'node-name': 'r2', 'read-only': true, file: { driver: 'raw', file: { driver: 'null-co', 'node-name': 'n2', 'read-only': false } } })).toEqual({
      return: {},
    });
    expect(await q.cmd('blockdev-add', { driver: 'raw', 'node-name': 'r3', file: { driver: 'file', 'node-name': 'f3', filename: join(dir, 'b.img'), 'read-only': true } })).toEqual({ return: {} });
    const ro = Object.fromEntries(((await q.cmd('query-named-block-nodes', { flat: true })).return as { 'node-name': string; ro: boolean }[]).map((n) => [n['node-name'], n.ro]));
    expect(ro).toMatchObject({ r1: true, f1: false, r2: true, n2: false, r3: false, f3: true });
  });

  it('refuses a writable export of a read-write raw over a read-only file ("Block node is read-only"); a read-only one is fine', async () => {
    const q = await qmp();
    writeFileSync(join(dir, 'a.img'), Buffer.alloc(1 << 20));
    expect(await q.cmd('blockdev-add', { driver: 'raw', 'node-name': 'r', file: { driver: 'file', filename: join(dir, 'a.img'), 'read-only': true } })).toEqual({ return: {} });
    expect(await q.cmd('block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'r', writable: true })).toEqual(readOnlyNode);
    expect(await q.cmd('block-export-add', { type: 'nbd', id: 'e2', 'node-name': 'r', writable: false })).toEqual({ return: {} });
    expect(((await q.cmd('query-block-exports')).return as { id: string }[]).map((e) => e.id)).toEqual(['e2']);
  });
});

describe('root nodes ("Need a root block node")', () => {
  const needRoot = { error: { class: 'GenericError', desc: 'Need a root block node' } };

  async function withImages(q: Awaited<ReturnType<typeof qmp>>, names: string[]) {
    for (const name of names) {
      const file = join(dir, `${name}.qcow2`);
      await createImage(file, { format: 'qcow2', size: 1 << 20 });
      expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: file } })).toEqual({ return: {} });
    }
  }

  it("refuses a running backup's source and target as the device of a mirror, commit or internal snapshot, as QSD; roots again once it ends", async () => {
    const q = await qmp();
    await withImages(q, ['n0', 'n1', 'n2']);
    expect(await q.cmd('blockdev-backup', { 'job-id': 'b0', device: 'n0', target: 'n1', sync: 'full', speed: 1 })).toEqual({ return: {} });
    for (const device of ['n0', 'n1']) {
      expect(await q.cmd('blockdev-mirror', { 'job-id': 'm1', device, target: 'n2', sync: 'full', speed: 1 })).toEqual(needRoot);
      expect(await q.cmd('drive-mirror', { 'job-id': 'm2', device, target: join(dir, 'x.qcow2'), format: 'qcow2', sync: 'full', speed: 1 })).toEqual(needRoot);
      expect(await q.cmd('block-commit', { 'job-id': 'c1', device })).toEqual(needRoot);
      expect(await q.cmd('blockdev-snapshot-internal-sync', { device, name: 's1' })).toEqual(needRoot);
    }
    expect(await q.cmd('job-cancel', { id: 'b0' })).toEqual({ return: {} });
    await q.waitEvent('JOB_STATUS_CHANGE', (d) => d.id === 'b0' && d.status === 'null');
    expect(await q.cmd('blockdev-snapshot-internal-sync', { device: 'n1', name: 's1' })).toEqual({ return: {} });
  });

  it("refuses a running mirror's target (and its source) as the device of another mirror or an internal snapshot, as QSD", async () => {
    const q = await qmp();
    await withImages(q, ['n0', 'n1', 'n2']);
    expect(await q.cmd('blockdev-mirror', { 'job-id': 'm0', device: 'n0', target: 'n1', sync: 'full', speed: 1 })).toEqual({ return: {} });
    for (const device of ['n0', 'n1']) {
      expect(await q.cmd('blockdev-mirror', { 'job-id': 'm1', device, target: 'n2', sync: 'full', speed: 1 })).toEqual(needRoot);
      expect(await q.cmd('blockdev-snapshot-internal-sync', { device, name: 's1' })).toEqual(needRoot);
    }
    expect(await q.cmd('block-commit', { 'job-id': 'c1', device: 'n1' })).toEqual(needRoot);
    expect(await q.cmd('job-cancel', { id: 'm0' })).toEqual({ return: {} });
    await q.waitEvent('JOB_STATUS_CHANGE', (d) => d.id === 'm0' && d.status === 'null');
  });

  it('refuses a node under a running stream (below its copy-on-read filter), as QSD', async () => {
    const q = await qmp();
    await withImages(q, ['n2']);
    // Data in the base: the stream has something to copy, and is still copying when the commands come.
    const baseFile = join(dir, 'base.qcow2');
    await createImage(baseFile, { format: 'qcow2', size: 1 << 20 });
    const writer = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: baseFile } });
    await writer.write(0, new Uint8Array(1 << 20).fill(7));
    await writer.close();
    expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'base', file: { driver: 'file', filename: baseFile } })).toEqual({ return: {} });
    const top = join(dir, 'top.qcow2');
    await createImage(top, { format: 'qcow2', size: 1 << 20 });
    expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 't', file: { driver: 'file', filename: top }, backing: 'base' })).toEqual({ return: {} });
    expect(await q.cmd('block-stream', { 'job-id': 's0', device: 't', speed: 1, 'filter-node-name': 'cor' })).toEqual({ return: {} });
    expect(await q.cmd('blockdev-mirror', { 'job-id': 'm1', device: 't', target: 'n2', sync: 'full', speed: 1 })).toEqual(needRoot);
    expect(await q.cmd('blockdev-snapshot-internal-sync', { device: 't', name: 's1' })).toEqual(needRoot);
    expect(await q.cmd('block-commit', { 'job-id': 'c1', device: 't' })).toEqual(needRoot);
    expect(await q.cmd('job-cancel', { id: 's0' })).toEqual({ return: {} });
    await q.waitEvent('JOB_STATUS_CHANGE', (d) => d.id === 's0' && d.status === 'null');
  });
});
