import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';

describe('an open BlockNode given as a child (a reference to an existing node)', () => {
  it('is shared: the parent takes a reference and closing the parent leaves the node open', async () => {
    const layer = new BlockLayer();
    const mem = await layer.openNode({ driver: 'memory', size: 4096 });
    await mem.write(0, new Uint8Array(4096).fill(7));
    const drive = await layer.openDrive({ driver: 'raw', file: mem });
    expect(drive.node.child('file')).toBe(mem);
    expect((await drive.read(0, 4))[0]).toBe(7);
    await drive.write(0, new Uint8Array([1, 2]));
    await drive.close();
    // still open: our reference remains
    const b = new Uint8Array(2);
    await mem.read(0, b);
    expect([...b]).toEqual([1, 2]);
    await mem.unref();
    await expect(mem.read(0, b)).rejects.toMatchObject({ code: 'ECLOSED' });
    await layer.close();
  });

  it('refuses a read-only node as the written child of a read-write parent, and keeps it open', async () => {
    const layer = new BlockLayer();
    const mem = await layer.openNode({ driver: 'memory', size: 4096, readOnly: true });
    await expect(layer.openDrive({ driver: 'raw', file: mem })).rejects.toMatchObject({ code: 'EINVAL', field: 'file' });
    const ro = await layer.openDrive({ driver: 'raw', readOnly: true, file: mem });
    await ro.close();
    await mem.read(0, new Uint8Array(1));
    await mem.unref();
    await layer.close();
  });

  it('refuses a closed node', async () => {
    const layer = new BlockLayer();
    const mem = await layer.openNode({ driver: 'memory', size: 4096 });
    await mem.unref();
    await expect(layer.openDrive({ driver: 'raw', file: mem })).rejects.toMatchObject({ name: 'BlockError' });
    await layer.close();
  });
});
