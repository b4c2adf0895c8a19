import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { BlockError, BlockLayer, type BlockStatus, type Drive, defineDriver } from '../../src/index.js';
import { qcow2Workspace } from '../helpers/qcow2-workspace.js';
import { rejection } from '../helpers/rejection.js';

const ws = qcow2Workspace('blocklayer-extents-');

async function collect(it: AsyncIterable<BlockStatus>): Promise<BlockStatus[]> {
  const out: BlockStatus[] = [];
  for await (const s of it) out.push({ ...s });
  return out;
}

/** A driver whose status changes every `extent` bytes (allocated, then not, …): many driver calls for one map. */
const stripes = defineDriver({
  name: 'stripes',
  capabilities: { kind: 'protocol' },
  schema: z.object({ size: z.number(), extent: z.number() }),
  async open({ options }) {
    const { size, extent } = options;
    return {
      alignment: 1,
      length: () => size,
      async read(_offset: number, buffer: Uint8Array) {
        buffer.fill(0);
      },
      async write() {},
      async flush() {},
      async discard() {},
      async blockStatus(offset: number, length: number): Promise<BlockStatus> {
        const end = Math.min(offset + length, (Math.floor(offset / extent) + 1) * extent);
        const allocated = Math.floor(offset / extent) % 2 === 0;
        return { offset, length: end - offset, data: allocated, zero: !allocated, allocated, depth: 0 };
      },
      async close() {},
    };
  },
});

async function stripedDrive(size = 64 * 512, extent = 512): Promise<{ layer: BlockLayer; d: Drive }> {
  const layer = new BlockLayer();
  layer.registerDriver(stripes);
  const d = await layer.openDrive({ driver: 'stripes', size, extent });
  return { layer, d };
}

describe('Drive.blockStatusExtents (for await over block status)', () => {
  for (const name of ['v3.qcow2', 'over.qcow2', 'zlib.qcow2', 'snap.qcow2']) {
    it(`${name}: yields what blockStatusMap gives, whole and for sub-ranges`, async () => {
      const d = await ws.open(name, { readOnly: true });
      const map = await d.blockStatusMap();
      expect(map.length).toBeGreaterThan(1);
      expect(await collect(d.blockStatusExtents())).toEqual(map);
      for (const [offset, length] of [
        [0, d.length],
        [1000, 20000],
        [4097, 1],
        [d.length - 3000, 3000],
        [d.length, 0],
      ]) {
        expect(await collect(d.blockStatusExtents(offset, length))).toEqual(await d.blockStatusMap(offset, length));
      }
      // The default length runs to the end from the given offset, as blockStatusMap's does.
      expect(await collect(d.blockStatusExtents(5000))).toEqual(await d.blockStatusMap(5000));
      await d.close();
    });
  }

  it('a memory drive with holes: the same extents as blockStatusMap, in order, contiguous', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: '1M' });
    await d.write(0, new Uint8Array(100).fill(1));
    await d.write(3 * 65536 + 7, new Uint8Array(70000).fill(2));
    await d.write(10 * 65536, new Uint8Array(1).fill(3));
    const map = await d.blockStatusMap();
    expect(map.map((e) => e.data)).toEqual([true, false, true, false, true, false]);
    const got = await collect(d.blockStatusExtents());
    expect(got).toEqual(map);
    let pos = 0;
    for (const e of got) {
      expect(e.offset).toBe(pos);
      pos += e.length;
    }
    expect(pos).toBe(d.length);
    await layer.close();
  });

  it('merges neighbours as blockStatusMap does (one extent over many driver calls)', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: '1M' });
    await d.write(0, new Uint8Array(5 * 65536).fill(1));
    const calls = vi.spyOn(d, 'blockStatus');
    const got = await collect(d.blockStatusExtents());
    expect(got).toEqual([
      { offset: 0, length: 5 * 65536, data: true, zero: false, allocated: true, depth: 0, node: d.node.name },
      { offset: 5 * 65536, length: 11 * 65536, data: false, zero: true, allocated: false, depth: 0, node: d.node.name },
    ]);
    expect(calls).toHaveBeenCalled();
    await layer.close();
  });

  it('reads only as far as it is consumed: a break stops asking the driver', async () => {
    const { layer, d } = await stripedDrive();
    const calls = vi.spyOn(d, 'blockStatus');
    const seen: BlockStatus[] = [];
    for await (const s of d.blockStatusExtents()) {
      seen.push(s);
      if (seen.length === 3) break;
    }
    expect(seen.map((s) => s.offset)).toEqual([0, 512, 1024]);
    // Each extent is complete once the next one is known: one call ahead, no more.
    expect(calls).toHaveBeenCalledTimes(4);
    await new Promise((r) => setImmediate(r));
    expect(calls).toHaveBeenCalledTimes(4);
    // Nothing is read before the first next().
    calls.mockClear();
    const it2 = d.blockStatusExtents();
    await new Promise((r) => setImmediate(r));
    expect(calls).not.toHaveBeenCalled();
    await it2.return?.();
    expect(calls).not.toHaveBeenCalled();
    expect(await collect(d.blockStatusExtents())).toHaveLength(64);
    await layer.close();
  });

  it('bad arguments never throw: the first next() rejects with EINVAL naming the field', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    const cases: [unknown[], string][] = [
      [[-1], 'offset'],
      [[1.5], 'offset'],
      [['0'], 'offset'],
      [[5000, 0], 'offset'],
      [[5000], 'length'], // the default length (to the end) is negative there, as in blockStatusMap
      [[0, -1], 'length'],
      [[0, 4097], 'length'],
      [[4000, 200], 'length'],
      [[0, Number.NaN], 'length'],
      [[0, 4096, { signal: 'yes' }], 'signal'],
    ];
    for (const [args, field] of cases) {
      const iter = (d.blockStatusExtents as (...a: unknown[]) => AsyncIterableIterator<BlockStatus>)(...args);
      const e = await rejection(iter.next());
      expect(e, JSON.stringify(args)).toBeInstanceOf(BlockError);
      expect(e).toMatchObject({ code: 'EINVAL', field });
      // The same validation as blockStatusMap (when it takes the same arguments).
      if (args.length < 3) expect(await rejection((d.blockStatusMap as (...a: unknown[]) => Promise<unknown>)(...args))).toMatchObject({ code: 'EINVAL', field, message: (e as Error).message });
      // The failed iteration is over.
      expect(await iter.next()).toEqual({ done: true, value: undefined });
    }
    await d.close();
    await expect(d.blockStatusExtents().next()).rejects.toMatchObject({ code: 'ECLOSED' });
    await layer.close();
  });

  it('an aborted signal rejects with ECANCELED carrying its reason, at the start and mid-way', async () => {
    const { layer, d } = await stripedDrive();
    await expect(d.blockStatusExtents(0, d.length, { signal: AbortSignal.abort('early') }).next()).rejects.toMatchObject({
      code: 'ECANCELED',
      cause: 'early',
    });
    await expect(d.blockStatusExtents(0, 0, { signal: AbortSignal.abort('empty') }).next()).rejects.toMatchObject({ code: 'ECANCELED' });
    const ac = new AbortController();
    const calls = vi.spyOn(d, 'blockStatus');
    const seen: number[] = [];
    const reason = new Error('enough');
    const e = await rejection(
      (async () => {
        for await (const s of d.blockStatusExtents(0, d.length, { signal: ac.signal })) {
          seen.push(s.offset);
          if (seen.length === 2) ac.abort(reason);
        }
      })(),
    );
    expect(e).toMatchObject({ code: 'ECANCELED', cause: reason });
    expect(seen).toEqual([0, 512]);
    expect(calls).toHaveBeenCalledTimes(3);
    await layer.close();
  });

  it('closing the drive mid-way ends the iteration with ECLOSED', async () => {
    const { layer, d } = await stripedDrive();
    const iter = d.blockStatusExtents();
    expect((await iter.next()).value).toMatchObject({ offset: 0 });
    await d.close();
    await expect(iter.next()).rejects.toMatchObject({ code: 'ECLOSED' });
    await layer.close();
  });
});
