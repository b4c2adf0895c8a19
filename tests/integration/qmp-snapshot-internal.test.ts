import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer, QmpServer, snapshotImage } from '../../src/index.js';
import { snapshotTable } from '../../src/cli/snapshot.js';
import { prepareInternalSnapshot } from '../../src/qmp/snapshot-internal-commands.js';
import { startQemuDaemon, stopPid } from '../helpers/qemu-daemons.js';
import { haveProgram } from '../helpers/tools.js';
import { QmpClient as Qmp, type QmpMessage } from '../helpers/qmp-client.js';

/**
 * blockdev-snapshot-internal-sync and blockdev-snapshot-delete-internal-sync: one script of
 * commands against qemu-storage-daemon and against our server over the same kind of graph; the
 * answers must be equal (dates, which differ, masked), and both images check clean after.
 */

type Message = QmpMessage;

const CREATE = 'blockdev-snapshot-internal-sync';
const DELETE = 'blockdev-snapshot-delete-internal-sync';

/** The script: q0 a qcow2 root over file f0, r0 a raw root over f1, f2 a read-only file root. */
const SCRIPT: [string, Record<string, unknown>][] = [
  [CREATE, { device: 'q0', name: 's1' }],
  [CREATE, { device: 'q0', name: 's1' }],
  [CREATE, { device: 'q0', name: '' }],
  [CREATE, { device: 'nope', name: 'x' }],
  [CREATE, { device: 'f0', name: 'x' }],
  [CREATE, { device: 'r0', name: 'x' }],
  [CREATE, { device: 'f2', name: 'x' }],
  [CREATE, { device: 'q0' }],
  [CREATE, { device: 'q0', name: 'y', z: 1 }],
  [CREATE, { device: 'q0', name: 5 }],
  [DELETE, { device: 'q0' }],
  [DELETE, { device: 'q0', name: 'zz' }],
  [DELETE, { device: 'q0', id: '7' }],
  [DELETE, { device: 'q0', id: '1', name: 'nope' }],
  [DELETE, { device: 'r0', name: 'zz' }],
  [DELETE, { device: 'f2', name: 'zz' }],
  [DELETE, { device: 'nope', name: 'zz' }],
  [CREATE, { device: 'q0', name: 's2' }],
  [CREATE, { device: 'q0', name: 's3' }],
  [DELETE, { device: 'q0', name: 's1' }],
  [DELETE, { device: 'q0', id: '2', name: 's2' }],
];

/** Answers with the clocks (which differ between runs) replaced by their kind. */
function masked(m: Message): unknown {
  if (m.return === undefined || typeof m.return !== 'object' || m.return === null) return m;
  const r = { ...(m.return as Record<string, unknown>) };
  for (const k of ['date-sec', 'date-nsec', 'vm-clock-sec', 'vm-clock-nsec']) if (k in r) r[k] = typeof r[k];
  return { return: r };
}

let dir: string;
const cleanups: (() => unknown)[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-snapshot-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
});

function images(prefix: string): { qcow2: string; raw: string; ro: string } {
  const out = { qcow2: join(dir, `${prefix}.qcow2`), raw: join(dir, `${prefix}.raw`), ro: join(dir, `${prefix}-ro.raw`) };
  spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', out.qcow2, '1M']);
  spawnSync('qemu-io', ['-c', 'write -P 0x42 0 300k', out.qcow2]);
  writeFileSync(out.raw, Buffer.alloc(1 << 20));
  writeFileSync(out.ro, Buffer.alloc(1 << 20));
  return out;
}

const available = haveProgram('qemu-storage-daemon') && haveProgram('qemu-img') && haveProgram('qemu-io');

describe.skipIf(!available)('QMP internal snapshots against qemu-storage-daemon', () => {
  it('the same script gets the same answers, errors and SnapshotInfo; both images check clean and list the same', { timeout: 120_000 }, async () => {
    const theirsImg = images('theirs');
    const sock = join(dir, 'qsd.sock');
    const pid = startQemuDaemon(
      'qemu-storage-daemon',
      [
        '--blockdev', `driver=file,node-name=f0,filename=${theirsImg.qcow2}`,
        '--blockdev', 'driver=qcow2,node-name=q0,file=f0',
        '--blockdev', `driver=file,node-name=f1,filename=${theirsImg.raw}`,
        '--blockdev', 'driver=raw,node-name=r0,file=f1',
        '--blockdev', `driver=file,node-name=f2,filename=${theirsImg.ro},read-only=on`,
        '--chardev', `socket,id=m,path=${sock},server=on,wait=off`,
        '--monitor', 'chardev=m',
      ],
      dir,
    );
    cleanups.push(() => stopPid(pid));
    const qsd = await Qmp.connect(sock);
    const theirs: unknown[] = [];
    for (const [c, a] of SCRIPT) theirs.push(masked(await qsd.cmd(c, a)));
    qsd.close();
    await stopPid(pid);

    const oursImg = images('ours');
    const layer = new BlockLayer();
    cleanups.push(() => layer.close());
    await layer.openDrive({ id: 'q0', driver: 'qcow2', nodeName: 'q0', file: { driver: 'file', nodeName: 'f0', filename: oursImg.qcow2 } });
    await layer.openDrive({ id: 'r0', driver: 'raw', nodeName: 'r0', file: { driver: 'file', nodeName: 'f1', filename: oursImg.raw } });
    await layer.openDrive({ id: 'f2', driver: 'file', nodeName: 'f2', readOnly: true, filename: oursImg.ro });
    const server = new QmpServer(layer);
    cleanups.push(() => server.close());
    const ourSock = join(dir, 'ours.sock');
    await server.listen({ path: ourSock });
    const qmp = await Qmp.connect(ourSock);
    const mine: unknown[] = [];
    for (const [c, a] of SCRIPT) mine.push(masked(await qmp.cmd(c, a)));
    qmp.close();
    await server.close();
    await layer.close();

    expect(mine).toEqual(theirs);
    // The script reached successes, SnapshotInfo and errors on both sides.
    expect(JSON.stringify(theirs)).toContain('"name":"s2"');
    expect(JSON.stringify(theirs)).toContain('already exists');
    for (const img of [theirsImg.qcow2, oursImg.qcow2]) {
      const r = spawnSync('qemu-img', ['check', img], { encoding: 'utf8' });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain('No errors were found on the image.');
    }
    const names = async (img: string) => (await snapshotImage(img, { list: true })).snapshots.map((s) => [s.id, s.name, s.icount]);
    expect(await names(oursImg.qcow2)).toEqual(await names(theirsImg.qcow2));
    expect(await names(oursImg.qcow2)).toEqual([['3', 's3', -1]]);
    // Their snapshot (a vm clock, no icount) printed as qemu-img prints it.
    const listed = spawnSync('qemu-img', ['snapshot', '-l', theirsImg.qcow2], { encoding: 'utf8' }).stdout;
    expect(`${snapshotTable((await snapshotImage(theirsImg.qcow2, { list: true })).snapshots).join('\n')}\n`).toBe(listed);
  });

  it('as a transaction action: prepared, the snapshot exists; abort deletes it again, commit keeps it', async () => {
    const img = images('tx').qcow2;
    const layer = new BlockLayer();
    cleanups.push(() => layer.close());
    const d = await layer.openDrive({ id: 'd0', driver: 'qcow2', nodeName: 'q0', file: { driver: 'file', filename: img } });
    const undone = await prepareInternalSnapshot(layer, { device: 'd0', name: 'gone' });
    expect(d.node.snapshots!.list().map((x) => x.name)).toEqual(['gone']);
    await undone.abort();
    const kept = await prepareInternalSnapshot(layer, { device: 'q0', name: 'kept' });
    kept.commit();
    expect(d.node.snapshots!.list().map((x) => [x.id, x.name])).toEqual([['1', 'kept']]);
    await expect(prepareInternalSnapshot(layer, { device: 'q0', name: 'kept' })).rejects.toMatchObject({ errorClass: 'GenericError', message: "Snapshot with name 'kept' already exists on device 'q0'" });
    await layer.close();
    const r = spawnSync('qemu-img', ['check', img], { encoding: 'utf8' });
    expect(r.status, r.stdout).toBe(0);
  });
});
