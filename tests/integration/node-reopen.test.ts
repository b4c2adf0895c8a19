// BlockNode.reopen (QEMU bdrv_reopen_set_read_only): a qcow2 over a file switched between
// read-only and read-write on the same node, judged by qemu-img and qemu-io, with QEMU's image
// locks following the mode (what qemu-img may open changes with it).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { haveQemuLocks } from '../../src/drivers/file/qemu-lock.js';
import { BlockError, BlockLayer } from '../../src/index.js';
import { haveProgram } from '../helpers/tools.js';

const can = haveProgram('qemu-img') && haveProgram('qemu-io');
const locks = can && haveQemuLocks();

let dir: string;
let layer: BlockLayer;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-reopen-'));
  layer = new BlockLayer();
});
afterEach(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const img = (...args: string[]) => spawnSync('qemu-img', args, { encoding: 'utf8' });
const io = (...args: string[]) => spawnSync('qemu-io', args, { encoding: 'utf8' });

async function readOnlyImage(name = 'a.qcow2') {
  const file = path.join(dir, name);
  expect(img('create', '-q', '-f', 'qcow2', file, '8M').status).toBe(0);
  expect(io('-f', 'qcow2', '-c', 'write -P 0x11 0 1M', file).status).toBe(0);
  const node = await layer.addNode({ driver: 'qcow2', nodeName: 'img', readOnly: true, file: { driver: 'file', nodeName: 'img-file', filename: file } });
  return { file, node };
}

describe.skipIf(!can)('BlockNode.reopen', () => {
  it('read-only → read-write → read-only: the node and its file switch, writes land, qemu-img check is clean', async () => {
    const { file, node } = await readOnlyImage();
    await expect(node.write(0, new Uint8Array(512))).rejects.toMatchObject({ code: 'EROFS' });
    await node.reopen(false);
    expect(node.readOnly).toBe(false);
    expect(node.child('file')!.readOnly).toBe(false);
    await node.write(2 * 1024 * 1024, new Uint8Array(64 * 1024).fill(0x22));
    await node.flush();
    await node.reopen(true);
    expect(node.readOnly).toBe(true);
    expect(node.child('file')!.readOnly).toBe(true);
    await expect(node.write(0, new Uint8Array(512))).rejects.toMatchObject({ code: 'EROFS' });
    // What was written reads back through the node reopened read-only.
    const back = new Uint8Array(64 * 1024);
    await node.read(2 * 1024 * 1024, back);
    expect(back.every((b) => b === 0x22)).toBe(true);
    const check = img('check', '-U', file);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const r = io('-U', '-r', '-f', 'qcow2', '-c', 'read -P 0x22 2M 64k', '-c', 'read -P 0x11 0 1M', file);
    expect(r.stdout + r.stderr).not.toMatch(/Pattern verification failed|error/i);
  });

  it.skipIf(!locks)("QEMU's locks follow the mode: qemu-img info opens the image read-only only while the node is read-only", async () => {
    const { file, node } = await readOnlyImage();
    expect(img('info', file).status).toBe(0);
    await node.reopen(false);
    const refused = img('info', file);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toContain('Failed to get shared "write" lock');
    await node.reopen(true);
    const info = img('info', file);
    expect(info.status, info.stderr).toBe(0);
    // A qemu-io writer may not get in while read-write, and a read-write reopen is refused while one holds the image.
    await node.reopen(false);
    expect(io('-f', 'qcow2', '-c', 'write 0 512', file).stderr).toContain('Failed to get "write" lock');
    await node.reopen(true);
  });

  it.skipIf(!locks)('a read-write reopen refused by a lock leaves the node read-only with its old locks', async () => {
    const { file, node } = await readOnlyImage();
    // qemu-nbd -r holds the image read-only and shares no writing.
    const sock = path.join(dir, 'nbd.sock');
    const nbd = spawnSync('qemu-nbd', ['--fork', '-r', '-f', 'qcow2', '-k', sock, '--pid-file', path.join(dir, 'nbd.pid'), file], { encoding: 'utf8' });
    expect(nbd.status, nbd.stderr).toBe(0);
    try {
      const e = await node.reopen(false).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(BlockError);
      expect((e as BlockError).code).toBe('ELOCKED');
      expect((e as BlockError).message).toContain('"write" lock');
      expect(node.readOnly).toBe(true);
      expect(node.child('file')!.readOnly).toBe(true);
      const buf = new Uint8Array(4096);
      await node.read(0, buf);
      expect(buf[0]).toBe(0x11);
    } finally {
      const pid = Number(fs.readFileSync(path.join(dir, 'nbd.pid'), 'utf8'));
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 100 && fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 20));
    }
    await node.reopen(false);
    expect(node.readOnly).toBe(false);
  });

  it('persistent bitmaps follow: marked in use while read-write, stored clean when read-only again (qemu-img info), the write recorded', async () => {
    const file = path.join(dir, 'b.qcow2');
    expect(img('create', '-q', '-f', 'qcow2', file, '8M').status).toBe(0);
    expect(img('bitmap', '--add', file, 'b0').status).toBe(0);
    const node = await layer.addNode({ driver: 'qcow2', nodeName: 'img', readOnly: true, file: { driver: 'file', filename: file } });
    const flags = () => {
      const info = JSON.parse(img('info', '-U', '--output=json', file).stdout) as { 'format-specific': { data: { bitmaps: { name: string; flags: string[] }[] } } };
      return info['format-specific'].data.bitmaps.find((b) => b.name === 'b0')!.flags;
    };
    expect(flags()).toEqual(['auto']);
    await node.reopen(false);
    expect(flags()).toContain('in-use');
    await node.write(1024 * 1024, new Uint8Array(4096).fill(1));
    await node.reopen(true);
    expect(flags()).toEqual(['auto']);
    expect(node.bitmaps.find('b0')!.count).toBeGreaterThan(0);
    await layer.close();
    const check = img('check', file);
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it('a driver with nothing that depends on the mode (null) switches both ways; the same mode again is a no-op', async () => {
    const node = await layer.addNode({ driver: 'null', nodeName: 'n', readOnly: true, size: 1024 } as never);
    await node.reopen(true);
    await node.reopen(false);
    expect(node.readOnly).toBe(false);
    await node.write(0, new Uint8Array(512));
  });
});
