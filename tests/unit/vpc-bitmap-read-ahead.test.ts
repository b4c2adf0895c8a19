// A block status of a dynamic VHD reads the sector bitmaps of the following stored blocks in the
// range asked at once, so that a walk of block status waits once per window, not once per block.
import { describe, expect, it } from 'vitest';
import { vpcDriver } from '../../src/drivers/index.js';
import { BlockLayer } from '../../src/index.js';

const MiB = 2 ** 20;
const BLOCK = 2 * MiB;

describe('vpc: block status reads bitmaps ahead', () => {
  it('one status over four stored blocks reads their four bitmaps; statuses of the next three read nothing more', async () => {
    await using layer = new BlockLayer();
    const file = await layer.openNode({ driver: 'memory', size: 0 });
    await vpcDriver.create!.create(file, 5 * BLOCK, { subformat: 'dynamic' });
    let node = await layer.openNode({ driver: 'vpc', file });
    for (let b = 0; b < 5; b++) await node.write(b * BLOCK, new Uint8Array(4096).fill(b + 1));
    await node.unref();
    node = await layer.openNode({ driver: 'vpc', file });
    const reads: { at: number; length: number }[] = [];
    const read = file.read.bind(file);
    file.read = (at: number, buffer: Uint8Array, ...rest: unknown[]) => {
      reads.push({ at, length: buffer.length });
      return (read as (...a: unknown[]) => Promise<void>)(at, buffer, ...rest);
    };
    const first = await node.blockStatus(0, 4 * BLOCK);
    expect(first).toMatchObject({ offset: 0, length: BLOCK, data: true, allocated: true });
    // Four bitmaps (one sector each), none of the fifth block, outside the range asked.
    expect(reads.map((r) => r.length)).toEqual([512, 512, 512, 512]);
    expect(new Set(reads.map((r) => r.at)).size).toBe(4);
    for (let b = 1; b < 4; b++) {
      const s = await node.blockStatus(b * BLOCK, BLOCK);
      expect(s).toMatchObject({ offset: b * BLOCK, length: BLOCK, data: true, allocated: true });
    }
    expect(reads).toHaveLength(4);
    // Reads within those blocks need no bitmap read: each is one read of data.
    const buf = new Uint8Array(4096);
    await node.read(3 * BLOCK, buf);
    expect(buf.every((x) => x === 4)).toBe(true);
    expect(reads).toHaveLength(5);
    expect(reads[4].length).toBe(4096);
    await node.unref();
  });
});
