// A write is marked in the dirty bitmaps when it settles, not when it starts (QEMU
// bdrv_co_write_req_finish): a clear that comes while a write is in flight cannot lose it, so the
// next incremental backup copies what the write changed. Checked on both recording paths: a
// Drive's requests (marked by the request's completion) and writes straight to the node.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { heldDriver } from '../helpers/held-driver.js';

const SIZE = 16 * 4096;
const G = 4096;

interface Pending {
  settle: (ok: boolean) => void;
}

const turn = () => new Promise<void>((r) => setImmediate(r));

const op = fc.oneof(
  fc.record({
    kind: fc.constantFrom('drive-write', 'drive-zero', 'drive-discard', 'node-write'),
    at: fc.integer({ min: 0, max: SIZE - 1 }),
    len: fc.integer({ min: 1, max: 3 * G }),
  }),
  fc.record({ kind: fc.constant('settle'), pick: fc.nat(), ok: fc.boolean() }),
  fc.record({ kind: fc.constant('clear') }),
);

describe('dirty bitmaps and writes in flight', () => {
  it('the bitmap holds exactly the writes that settled (done or failed) after the last clear, whatever the interleaving', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 30 }), async (ops) => {
        await using layer = new BlockLayer();
        const pending: Pending[] = [];
        layer.registerDriver(heldDriver(SIZE, (settle) => pending.push({ settle })));
        const d = await layer.openDrive({ driver: 'held' });
        d.addDirtyBitmap('b', { granularity: G });
        const bitmap = d.bitmapNode.bitmaps.get('b');
        // Requests in flight, in the order the driver took them (the same order as `pending`).
        const ranges: [number, number][] = [];
        const model = new Set<number>();
        const settleOne = async (i: number, ok: boolean) => {
          const [[first, end]] = ranges.splice(i, 1) as [[number, number]];
          pending.splice(i, 1)[0]!.settle(ok);
          await turn();
          for (let g = first; g < end; g++) model.add(g);
        };
        for (const o of ops) {
          if (o.kind === 'clear') {
            d.clearDirtyBitmap('b');
            model.clear();
          } else if (o.kind === 'settle') {
            if (pending.length > 0) await settleOne(o.pick % pending.length, o.ok);
          } else {
            const n = Math.min(o.len, SIZE - o.at);
            const caught = (p: Promise<unknown>) => void p.catch(() => {});
            if (o.kind === 'drive-write') caught(d.write(o.at, new Uint8Array(n)));
            else if (o.kind === 'drive-zero') caught(d.writeZeroes(o.at, n));
            else if (o.kind === 'drive-discard') caught(d.discard(o.at, n));
            else caught(d.bitmapNode.write(o.at, new Uint8Array(n)));
            await turn();
            expect(pending.length).toBe(ranges.length + 1);
            ranges.push([Math.floor(o.at / G), Math.ceil((o.at + n) / G)]);
          }
          // Nothing in flight is marked yet.
          for (let g = 0; g < SIZE / G; g++) expect(bitmap.granules.has(g)).toBe(model.has(g));
        }
        while (pending.length > 0) await settleOne(0, true);
        for (let g = 0; g < SIZE / G; g++) expect(bitmap.granules.has(g)).toBe(model.has(g));
        expect(bitmap.count).toBe(model.size * G);
      }),
      { numRuns: 100 },
    );
  });
});
