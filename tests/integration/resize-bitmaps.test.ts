// A node with dirty bitmaps resized (QEMU bdrv_dirty_bitmap_truncate): the same QMP script
// against qemu-storage-daemon and ours — bits written before stay, a shrink drops those past the
// end, a grown part starts clean — then the persistent bitmap stored in the image, which
// qemu-img reads and checks.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { type QmpClient, type QmpDaemon, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveProgram } from '../helpers/tools.js';

const HAVE = haveProgram('qemu-storage-daemon') && haveProgram('qemu-img') && haveProgram('qemu-io');
const MiB = 2 ** 20;
let dir: string;
let layer: BlockLayer;
const daemons: QmpDaemon[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'resize-bitmaps-'));
  layer = new BlockLayer();
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

function image(name: string): string {
  const path = join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '4M']);
  return path;
}

/** Bitmaps of node q0 as name → count, from query-named-block-nodes. */
async function counts(qmp: QmpClient): Promise<Record<string, number>> {
  const nodes = (await qmp.ok('query-named-block-nodes', { flat: true })) as { 'node-name': string; 'dirty-bitmaps'?: { name: string; count: number }[] }[];
  const q0 = nodes.find((n) => n['node-name'] === 'q0');
  return Object.fromEntries((q0?.['dirty-bitmaps'] ?? []).map((b) => [b.name, b.count]));
}

/** Adds bitmaps, lets `write` dirty two ranges, then resizes down and up; the answers in order. */
async function play(qmp: QmpClient, write: (offset: number, length: number) => Promise<void>, beforeResize: () => Promise<void> = async () => {}): Promise<unknown[]> {
  const out: unknown[] = [];
  out.push(await qmp.cmd('block-dirty-bitmap-add', { node: 'q0', name: 'b', granularity: 65536, persistent: true }));
  out.push(await qmp.cmd('block-dirty-bitmap-add', { node: 'q0', name: 'd', granularity: 65536, disabled: true }));
  await write(0, 65536);
  await write(3 * MiB, 131072);
  out.push(await counts(qmp));
  await beforeResize();
  out.push(await qmp.cmd('block_resize', { 'node-name': 'q0', size: 2 * MiB }));
  out.push(await counts(qmp));
  out.push(await qmp.cmd('block_resize', { 'node-name': 'q0', size: 6 * MiB }));
  out.push(await counts(qmp));
  out.push(await qmp.cmd('block-dirty-bitmap-merge', { node: 'q0', target: 'd', bitmaps: ['b'] }));
  out.push(await counts(qmp));
  return out;
}

describe('resize of a node with dirty bitmaps', () => {
  it.skipIf(!HAVE)('the bitmaps follow the node as in qemu-storage-daemon, and the stored bitmap is read by qemu-img', { timeout: 60_000 }, async () => {
    const theirsPath = image('theirs.qcow2');
    const nbd = join(dir, 'nbd.sock');
    const qsd = await startQsd(dir, [
      '--blockdev', `driver=file,node-name=f0,filename=${theirsPath}`,
      '--blockdev', 'driver=qcow2,node-name=q0,file=f0',
      '--nbd-server', `addr.type=unix,addr.path=${nbd}`,
      '--export', 'type=nbd,id=e0,node-name=q0,name=q0,writable=on',
    ]);
    daemons.push(qsd);
    const theirs = await play(
      qsd.qmp,
      async (offset, length) => {
        execFileSync('qemu-io', ['-f', 'raw', '-c', `write ${offset} ${length}`, `nbd+unix:///q0?socket=${nbd}`], { stdio: 'ignore' });
      },
      // QEMU's NBD export does not share the resize permission: the writes done, it goes.
      async () => {
        await qsd.qmp.ok('block-export-del', { id: 'e0' });
        await qsd.qmp.waitEvent('BLOCK_EXPORT_DELETED');
      },
    );
    await qsd.stop();
    daemons.splice(0);

    const oursPath = image('ours.qcow2');
    const drive = await layer.openDrive({ id: 'd0', driver: 'qcow2', nodeName: 'q0', file: { driver: 'file', filename: oursPath } });
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    const mine = await play(ours.qmp, (offset, length) => drive.write(offset, new Uint8Array(length).fill(1)).then(() => undefined));
    expect(mine).toEqual(theirs);
    // the script did dirty, drop and keep bits
    expect(theirs[2]).toEqual({ b: 196608, d: 0 });
    expect(theirs[4]).toEqual({ b: 65536, d: 0 });
    await ours.stop();
    daemons.splice(0);
    await layer.close();

    for (const path of [theirsPath, oursPath]) {
      execFileSync('qemu-img', ['check', '-q', path]);
      const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', path], { encoding: 'utf8' })) as { 'virtual-size': number; 'format-specific': { data: { bitmaps?: { name: string; granularity: number }[] } } };
      expect(info['virtual-size']).toBe(6 * MiB);
      expect(info['format-specific'].data.bitmaps?.map((b) => [b.name, b.granularity])).toEqual([['b', 65536]]);
    }
  });
});
