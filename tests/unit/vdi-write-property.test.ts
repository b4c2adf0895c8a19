import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { vdiDriver } from '../../src/drivers/vdi/index.js';
import { BlockLayer } from '../../src/index.js';

const MiB = 2 ** 20;
const SIZE = 6 * MiB;

type Op = { kind: 'write' | 'zero' | 'discard'; offset: number; length: number; byte: number };
const op = fc
  .record({ kind: fc.constantFrom('write', 'write', 'zero', 'discard'), offset: fc.nat({ max: SIZE - 1 }), length: fc.integer({ min: 1, max: 2 * MiB }), byte: fc.integer({ min: 1, max: 255 }) })
  .map((o) => ({ ...o, length: Math.min(o.length, SIZE - o.offset) }) as Op);
/** Ops that run at once must not overlap (their order would be undefined); they may share blocks. */
const disjoint = (ops: Op[]) => ops.every((a, i) => ops.every((b, j) => i === j || a.offset + a.length <= b.offset || b.offset + b.length <= a.offset));

describe('vdi writes (property, on a memory node)', () => {
  it('any sequence of batches of writes, zeroes and discards reads back as the model, survives a reopen and checks clean', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 5 }).filter(disjoint), { minLength: 1, maxLength: 8 }), fc.boolean(), async (batches, staticImage) => {
        const layer = new BlockLayer();
        try {
          const mem = await layer.openNode({ driver: 'memory', size: 0 });
          const made = await vdiDriver.create!.create(mem, SIZE, { static: staticImage });
          expect(made).toBe(SIZE);
          const model = new Uint8Array(SIZE);
          const image = await layer.openNode({ driver: 'vdi', file: mem });
          for (const batch of batches) {
            await Promise.all(
              batch.map((o) => {
                if (o.kind === 'write') {
                  const data = new Uint8Array(o.length).fill(o.byte);
                  model.set(data, o.offset);
                  return image.write(o.offset, data);
                }
                if (o.kind === 'zero') {
                  model.fill(0, o.offset, o.offset + o.length);
                  return image.writeZeroes(o.offset, o.length);
                }
                return image.discard(o.offset, o.length);
              }),
            );
          }
          const got = new Uint8Array(SIZE);
          await image.read(0, got);
          expect(Buffer.from(got).equals(Buffer.from(model))).toBe(true);
          await image.unref();
          const again = await layer.openNode({ driver: 'vdi', readOnly: true, file: mem });
          const reread = new Uint8Array(SIZE);
          await again.read(0, reread);
          expect(Buffer.from(reread).equals(Buffer.from(model))).toBe(true);
          await again.unref();
          expect(await vdiDriver.check!(mem, {})).toMatchObject({ corruptions: 0 });
        } finally {
          await layer.close();
        }
      }),
      { numRuns: 25 },
    );
  });
});
