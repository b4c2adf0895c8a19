// Random batches of concurrent writes and zeroes through the vpc driver on a memory node, checked
// against a plain Uint8Array; the image is reopened from its bytes and read again. Writes in a
// batch never overlap (the order of overlapping concurrent writes is not defined).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { vpcDriver } from '../../src/drivers/index.js';

const SIZE = 6 * 1024 * 1024;

const op = fc.record({
  kind: fc.constantFrom('write', 'write', 'write', 'zero'),
  sector: fc.nat(SIZE / 512 - 1),
  sectors: fc.integer({ min: 1, max: 3000 }),
  fill: fc.integer({ min: 1, max: 255 }),
});

describe('vpc: concurrent writes against a model', () => {
  it('reads what was written, before and after reopening; blocks are allocated once each', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 6 }), async (batches) => {
        const layer = new BlockLayer();
        try {
          const file = await layer.openNode({ driver: 'memory', size: 0 });
          const size = await vpcDriver.create!.create(file, SIZE, { subformat: 'dynamic' });
          const model = new Uint8Array(size);
          let node = await layer.openNode({ driver: 'vpc', file });
          const touched = new Set<number>();
          for (const batch of batches) {
            const taken: [number, number][] = [];
            const running: Promise<void>[] = [];
            for (const o of batch) {
              const start = o.sector * 512;
              const end = Math.min(size, start + o.sectors * 512);
              if (start >= end || taken.some(([a, b]) => start < b && end > a)) continue;
              taken.push([start, end]);
              if (o.kind === 'zero') {
                model.fill(0, start, end);
                running.push(node.writeZeroes(start, end - start));
              } else {
                model.fill(o.fill, start, end);
                for (let b = Math.floor(start / 2 ** 21); b * 2 ** 21 < end; b++) touched.add(b);
                running.push(node.write(start, new Uint8Array(end - start).fill(o.fill)));
              }
            }
            await Promise.all(running);
          }
          const read = async () => {
            const b = new Uint8Array(size);
            await node.read(0, b);
            return b;
          };
          expect(Buffer.from(await read()).equals(Buffer.from(model))).toBe(true);
          // Each written block once (zeroes where nothing is stored allocate nothing).
          expect(node.info().allocatedBlocks).toBe(touched.size);
          await node.unref();
          // The file ends with the footer right after the last block: header, BAT, blocks, footer.
          expect(file.length).toBe(2048 + 512 + touched.size * (512 + 2 ** 21));
          node = await layer.openNode({ driver: 'vpc', file });
          expect(Buffer.from(await read()).equals(Buffer.from(model))).toBe(true);
          await node.unref();
          await file.unref();
        } finally {
          await layer.close();
        }
      }),
      { numRuns: 25 },
    );
  });
});
