import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer, NbdServer, QmpServer } from '../../src/index.js';
import { startQemuDaemon, stopPid } from '../helpers/qemu-daemons.js';
import { haveProgram, ok } from '../helpers/tools.js';
import { QmpClient as Qmp } from '../helpers/qmp-client.js';


const MiB = 2 ** 20;
const TiB = 2 ** 40;
let dir: string;
let layer: BlockLayer;
const cleanups: (() => unknown)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'resize-qmp-'));
  layer = new BlockLayer();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

/** block_resize calls and the virtual size of n0 after them; the same for both servers. */
const SEQUENCE: Record<string, unknown>[] = [
  {},
  { size: MiB },
  { 'node-name': 'n0' },
  { 'node-name': 'zz', size: 2 * MiB },
  { device: 'zz', size: 2 * MiB },
  { device: 'zz', 'node-name': 'yy', size: 2 * MiB },
  { device: '', 'node-name': 'n0', size: 2 * MiB },
  { 'node-name': 'n0', size: -1 },
  { 'node-name': 'n0', size: '1M' },
  { 'node-name': 'n0', size: 1.5 },
  { 'node-name': 'n0', size: 2 * MiB + 1 },
  { 'node-name': 'n0', size: 2 * MiB, x: 1 },
  { 'node-name': 'n0', device: 7, size: 2 * MiB },
  { 'node-name': 'n0', size: 512 * 1024 },
  { 'node-name': 'rofile', size: 8192 },
  { 'node-name': 'f0', size: 8192 },
  { 'node-name': 'n0', size: 0 },
  { 'node-name': 'n0', size: 4 * MiB },
  // last: QEMU discards every cluster past a new end, which takes it a minute from 3 TiB
  { 'node-name': 'n0', size: 3 * TiB },
];

async function play(qmp: Qmp): Promise<unknown[]> {
  const out: unknown[] = [];
  for (const args of SEQUENCE) {
    out.push(await qmp.cmd('block_resize', args));
    const nodes = (await qmp.cmd('query-named-block-nodes', { flat: true })).return as { 'node-name': string; image: { 'virtual-size': number } }[];
    out.push(nodes.find((n) => n['node-name'] === 'n0')?.image['virtual-size']);
  }
  return out;
}

const qcow2WithData = (name: string) => {
  const img = join(dir, name);
  execFileSync('qemu-img', ['create', '-f', 'qcow2', img, '1M'], { stdio: 'ignore' });
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 1M', img], { stdio: 'ignore' });
  return img;
};

describe('QMP block_resize against qemu-storage-daemon', () => {
  it.skipIf(!haveProgram('qemu-storage-daemon') || !haveProgram('qemu-img') || !haveProgram('qemu-io'))(
    'answers the same sequence of calls as QEMU, and leaves an image qemu-img finds equal and clean',
    { timeout: 120_000 },
    async () => {
      const theirsImg = qcow2WithData('theirs.qcow2');
      const oursImg = qcow2WithData('ours.qcow2');
      const ro = join(dir, 'ro.raw');
      writeFileSync(ro, Buffer.alloc(4096));
      const qmpPath = join(dir, 'qsd.sock');
      const pid = startQemuDaemon(
        'qemu-storage-daemon',
        [
          '--blockdev', `driver=file,node-name=f0,filename=${theirsImg}`,
          '--blockdev', 'driver=qcow2,node-name=n0,file=f0',
          '--blockdev', `driver=file,node-name=rofile,filename=${ro},read-only=on`,
          '--chardev', `socket,id=m,path=${qmpPath},server=on,wait=off`,
          '--monitor', 'chardev=m',
        ],
        dir,
      );
      cleanups.push(() => stopPid(pid));
      const qsd = await Qmp.connect(qmpPath);
      const theirs = await play(qsd);
      qsd.close();
      await stopPid(pid);

      await layer.openDrive({ id: 'd0', driver: 'qcow2', nodeName: 'n0', file: { driver: 'file', filename: oursImg, nodeName: 'f0' } });
      await layer.openDrive({ id: 'd1', driver: 'file', nodeName: 'rofile', filename: ro, readOnly: true });
      const server = new QmpServer(layer);
      const path = join(dir, 'ours.sock');
      await server.listen({ path });
      cleanups.push(() => server.close());
      const qmp = await Qmp.connect(path);
      cleanups.push(() => qmp.close());
      const mine = await play(qmp);
      expect(mine).toEqual(theirs);
      expect(JSON.stringify(theirs)).toContain('Permission conflict');
      expect(theirs.at(-1)).toBe(3 * TiB);
      await layer.drive('d0')!.close();
      await ok('qemu-img', ['check', oursImg]);
      await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', theirsImg, oursImg]);
    },
  );
});

describe('QMP block_resize on our server', () => {
  it.skipIf(!haveProgram('nbdinfo'))('by device (a drive id): emits the drive event, and a new NBD connection sees the new size', { timeout: 60_000 }, async () => {
    const drive = await layer.openDrive({ id: 'disk', driver: 'memory', size: MiB, nodeName: 'm0' });
    const events: unknown[] = [];
    drive.on('resize', (e) => events.push(e));
    const nbd = new NbdServer();
    nbd.addExport({ name: 'disk', drive });
    const sock = join(dir, 'nbd.sock');
    await nbd.listen({ path: sock });
    cleanups.push(() => nbd.close());
    const uri = `nbd+unix:///disk?socket=${sock}`;
    expect((await ok('nbdinfo', ['--size', uri])).trim()).toBe(String(MiB));
    const server = new QmpServer(layer);
    const path = join(dir, 'q.sock');
    await server.listen({ path });
    cleanups.push(() => server.close());
    const qmp = await Qmp.connect(path);
    cleanups.push(() => qmp.close());
    expect(await qmp.cmd('block_resize', { device: 'disk', size: 64 * MiB })).toEqual({ return: {} });
    expect(events).toEqual([{ oldSize: MiB, newSize: 64 * MiB }]);
    expect((await ok('nbdinfo', ['--size', uri])).trim()).toBe(String(64 * MiB));
    expect(await qmp.cmd('block_resize', { 'node-name': 'm0', size: 4096 })).toEqual({ return: {} });
    expect((await ok('nbdinfo', ['--size', uri])).trim()).toBe('4096');
    expect((await qmp.cmd('query-commands')).return).toContainEqual({ name: 'block_resize' });
  });
});
