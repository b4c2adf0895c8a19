import { describe, expect, it } from 'vitest';
import { parseVdiHeader } from '../../src/drivers/vdi/header.js';
import { vdiDriver } from '../../src/drivers/vdi/index.js';
import * as L from '../../src/drivers/vdi/limits.js';
import { BlockLayer } from '../../src/index.js';

const MiB = 2 ** 20;
const SIZE = 8 * MiB;

type Op = { op: 'write'; at: number; length: number } | { op: 'flush' };

/** A vdi on a memory node whose writes and flushes are logged in the order the driver issues them. */
async function logged(layer: BlockLayer) {
  const mem = await layer.openNode({ driver: 'memory', size: 0 });
  await vdiDriver.create!.create(mem, SIZE, {});
  const head = new Uint8Array(L.HEADER_BYTES);
  await mem.read(0, head);
  const h = parseVdiHeader(head, mem.length);
  const log: Op[] = [];
  const write = mem.write.bind(mem);
  const flush = mem.flush.bind(mem);
  mem.write = (at: number, data: Uint8Array, ...rest: unknown[]) => {
    log.push({ op: 'write', at, length: data.length });
    return (write as (...a: unknown[]) => Promise<void>)(at, data, ...rest);
  };
  mem.flush = () => {
    log.push({ op: 'flush' });
    return flush();
  };
  const entries = async () => {
    const bytes = new Uint8Array(L.SECTOR_SIZE);
    await mem.read(h.offsetBmap, bytes);
    const v = new DataView(bytes.buffer);
    return Array.from({ length: SIZE / MiB }, (_, b) => v.getUint32(b * 4, true));
  };
  return { mem, h, log, entries };
}

describe('vdi: a new block is recorded in the map only after its data is flushed', () => {
  it('writes to new blocks leave the map on disk unchanged until a flush; the flush orders data, then header and map, then a flush', async () => {
    const layer = new BlockLayer();
    try {
      const { mem, h, log, entries } = await logged(layer);
      const image = await layer.openNode({ driver: 'vdi', file: mem });
      const data = Buffer.alloc(3 * MiB, 0x5a);
      await image.write(2 * MiB, data);
      // In memory the blocks are there; on disk nothing points at them yet.
      const back = new Uint8Array(3 * MiB);
      await image.read(2 * MiB, back);
      expect(Buffer.from(back).equals(data)).toBe(true);
      expect(await entries()).toEqual(Array(8).fill(L.BLOCK_UNALLOCATED));
      expect(log.every((o) => o.op === 'write' && o.at >= h.offsetData)).toBe(true);
      const before = log.length;
      await image.flush();
      const flushOps = log.slice(before);
      expect(flushOps[0]).toEqual({ op: 'flush' });
      expect(flushOps.at(-1)).toEqual({ op: 'flush' });
      const metadata = flushOps.slice(1, -1);
      expect(metadata.length).toBeGreaterThan(0);
      expect(metadata.every((o) => o.op === 'write' && o.at < h.offsetData)).toBe(true);
      expect(await entries()).toEqual([L.BLOCK_UNALLOCATED, L.BLOCK_UNALLOCATED, 0, 1, 2, L.BLOCK_UNALLOCATED, L.BLOCK_UNALLOCATED, L.BLOCK_UNALLOCATED]);
      // A flush with nothing new writes no metadata.
      const n = log.length;
      await image.flush();
      expect(log.slice(n)).toEqual([{ op: 'flush' }]);
      await image.unref();
      const again = await layer.openNode({ driver: 'vdi', readOnly: true, file: mem });
      const reread = new Uint8Array(3 * MiB);
      await again.read(2 * MiB, reread);
      expect(Buffer.from(reread).equals(data)).toBe(true);
      await again.unref();
      expect(await vdiDriver.check!(mem, {})).toMatchObject({ corruptions: 0 });
    } finally {
      await layer.close();
    }
  });

  it('many blocks written one by one (a convert) cost two flushes in all, and close records them', async () => {
    const layer = new BlockLayer();
    try {
      const { mem, log, entries } = await logged(layer);
      const image = await layer.openNode({ driver: 'vdi', file: mem });
      for (let b = 7; b >= 0; b--) await image.write(b * MiB + 512, Buffer.alloc(4096, b + 1));
      expect(log.filter((o) => o.op === 'flush')).toHaveLength(0);
      await image.unref();
      expect(log.filter((o) => o.op === 'flush')).toHaveLength(2);
      expect(await entries()).toEqual([7, 6, 5, 4, 3, 2, 1, 0]);
      expect(await vdiDriver.check!(mem, {})).toMatchObject({ corruptions: 0 });
    } finally {
      await layer.close();
    }
  });
});
