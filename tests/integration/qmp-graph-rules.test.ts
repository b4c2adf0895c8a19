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
