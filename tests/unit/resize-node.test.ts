import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { testProtocolDriver } from '../helpers/test-protocol-driver.js';

const MiB = 2 ** 20;

/** A protocol driver without the truncate hook. */
const fixed = testProtocolDriver('fixed', MiB, {
  read: async (_o, b) => void b.fill(0),
  blockStatus: async (offset, length) => ({ offset, length, data: false, zero: true, allocated: true, depth: 0 }),
});

describe('BlockNode.truncate and Drive.resize', () => {
  it('a throttle filter resizes the node it filters (QEMU: a filter passes truncate on)', async () => {
    await using layer = new BlockLayer();
    layer.createThrottleGroup('g', { iopsTotal: 1000 });
    const d = await layer.openDrive({ driver: 'throttle', throttleGroup: 'g', file: { driver: 'memory', size: MiB } });
    await d.resize(4 * MiB);
    expect(d.length).toBe(4 * MiB);
    expect(d.node.child('file')!.length).toBe(4 * MiB);
    await d.write(4 * MiB - 512, new Uint8Array(512).fill(1));
  });

  it('refuses: no hook (ENOTSUP naming the driver), bad sizes (EINVAL naming size), preallocation when shrinking, a closed drive', async () => {
    await using layer = new BlockLayer();
    layer.registerDriver(fixed);
    const f = await layer.openDrive({ driver: 'fixed' });
    await expect(f.resize(2 * MiB)).rejects.toMatchObject({ code: 'ENOTSUP', message: 'Image format driver does not support resize (fixed)' });
    const m = await layer.openDrive({ driver: 'memory', size: MiB });
    for (const bad of [Number.NaN, -1, 1.5, 2 ** 53, Number.POSITIVE_INFINITY]) {
      await expect(m.resize(bad)).rejects.toMatchObject({ code: 'EINVAL', field: 'size' });
    }
    await expect(m.resize(4096, { shrink: true, prealloc: 'full' })).rejects.toMatchObject({ code: 'EINVAL', field: 'prealloc' });
    expect(m.length).toBe(MiB);
    await m.close();
    await expect(m.resize(2 * MiB)).rejects.toMatchObject({ code: 'ECLOSED' });
  });

  it('the dirty bitmaps follow the node (QEMU bdrv_dirty_bitmap_truncate): a shrink drops the bits past the end, a grown part starts clean', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: MiB });
    d.addDirtyBitmap('b', { granularity: 65536 });
    await d.write(0, new Uint8Array(4096));
    await d.write(MiB - 4096, new Uint8Array(4096));
    await d.resize(MiB / 2, { shrink: true });
    expect(d.dirtyBitmaps()[0]).toMatchObject({ name: 'b', count: 65536 });
    await d.resize(2 * MiB);
    expect(d.dirtyBitmaps()[0]).toMatchObject({ count: 65536 });
    await d.write(2 * MiB - 4096, new Uint8Array(4096));
    const extents = [];
    for await (const e of d.dirtyExtents('b')) extents.push(e);
    expect(extents).toEqual([
      { offset: 0, length: 65536 },
      { offset: 2 * MiB - 65536, length: 65536 },
    ]);
  });

  it('emits resize after each resize that succeeded (sizes before and after), none for a refused one', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'null', size: MiB });
    const seen: unknown[] = [];
    d.on('resize', (e) => seen.push(e));
    await d.resize(3 * MiB);
    await expect(d.resize(MiB)).rejects.toMatchObject({ code: 'EINVAL' });
    await d.resize(MiB, { shrink: true });
    expect(seen).toEqual([
      { oldSize: MiB, newSize: 3 * MiB },
      { oldSize: 3 * MiB, newSize: MiB },
    ]);
  });
});
