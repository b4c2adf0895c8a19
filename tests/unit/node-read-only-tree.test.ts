// Read-only through a tree of node options (QEMU's rules for blockdev-add's read-only, the same
// for the library's openNode and openDrive options).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer, createImage } from '../../src/index.js';

let dir: string;
let layer: BlockLayer;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ro-tree-'));
  layer = new BlockLayer();
});

afterEach(async () => {
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('read-only in a tree of node options', () => {
  it('refuses a read-write format that keeps metadata over a read-only file child (EROFS, "Block node is read-only"), for openNode and openDrive', async () => {
    const image = join(dir, 'q.qcow2');
    await createImage(image, { format: 'qcow2', size: 1 << 20 });
    const options = { driver: 'qcow2', file: { driver: 'file', filename: image, readOnly: true, nodeName: 'f' } } as const;
    await expect(layer.openNode(options)).rejects.toMatchObject({ name: 'BlockError', code: 'EROFS', message: 'Block node is read-only', node: 'f', field: 'file' });
    await expect(layer.openDrive(options)).rejects.toMatchObject({ name: 'BlockError', code: 'EROFS', node: 'f', field: 'file' });
    // A read-write raw in between does not hide it.
    await expect(layer.openDrive({ driver: 'qcow2', file: { driver: 'raw', file: options.file } })).rejects.toMatchObject({ code: 'EROFS', node: 'f', field: 'file' });
    // Read-only all the way, it opens (and the refused opens left no name taken).
    const drive = await layer.openDrive({ ...options, readOnly: true });
    expect(drive.readOnly).toBe(true);
    await drive.close();
  });

  it('opens a child read-write when its options say so under a read-only parent', async () => {
    const node = await layer.openNode({ driver: 'raw', readOnly: true, file: { driver: 'memory', size: 4096, readOnly: false, nodeName: 'm' } });
    expect(node.readOnly).toBe(true);
    const m = node.child('file')!;
    expect(m.readOnly).toBe(false);
    await m.write(0, new Uint8Array([5]));
    await expect(node.write(0, new Uint8Array([1]))).rejects.toMatchObject({ code: 'EROFS' });
    await node.unref();
  });

  it('opens a read-write raw over a read-only file child; its writes fail with EROFS there', async () => {
    const node = await layer.openNode({ driver: 'raw', file: { driver: 'memory', size: 4096, readOnly: true, nodeName: 'm' } });
    expect(node.readOnly).toBe(false);
    expect(node.writeBlocker()?.name).toBe('m');
    await expect(node.write(0, new Uint8Array([1]))).rejects.toMatchObject({ code: 'EROFS', node: 'm' });
    await node.unref();
  });
});
