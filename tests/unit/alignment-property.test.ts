import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';

const SIZE = 64 * 1024;

const opArb = fc.oneof(
  fc.record({
    kind: fc.constant('write' as const),
    offset: fc.integer({ min: 0, max: SIZE - 1 }),
    length: fc.integer({ min: 1, max: 3000 }),
    fill: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({
    kind: fc.constant('zero' as const),
    offset: fc.integer({ min: 0, max: SIZE - 1 }),
    length: fc.integer({ min: 1, max: 5000 }),
    fill: fc.constant(0),
  }),
  fc.record({
    kind: fc.constant('read' as const),
    offset: fc.integer({ min: 0, max: SIZE - 1 }),
    length: fc.integer({ min: 1, max: 5000 }),
    fill: fc.constant(0),
  }),
);

/** First offset where two buffers differ, -1 if equal (cheaper and clearer than a deep equal of 64 KiB). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

type Op = { kind: 'write' | 'zero' | 'read'; offset: number; length: number; fill: number };

async function apply(d: Awaited<ReturnType<BlockLayer['openDrive']>>, op: Op): Promise<Uint8Array | undefined> {
  const length = Math.min(op.length, SIZE - op.offset);
  if (op.kind === 'write') {
    // A pattern that changes inside the range, so shifted bytes are caught.
    const data = new Uint8Array(length);
    for (let i = 0; i < length; i++) data[i] = (op.fill + i) & 0xff;
    await d.write(op.offset, data);
    return undefined;
  }
  if (op.kind === 'zero') {
    await d.writeZeroes(op.offset, length);
    return undefined;
  }
  return d.read(op.offset, length);
}

describe('alignment and splitting in the generic layer', () => {
  it('unaligned reads, writes and write-zeroes on a 512-byte aligned driver give the same bytes as on an unaligned one', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(opArb, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 6 }),
        fc.constantFrom(0, 1024, 4096),
        async (batches, maxTransfer) => {
          const layer = new BlockLayer();
          const plain = await layer.openDrive({ driver: 'memory', size: SIZE });
          const aligned = await layer.openDrive({ driver: 'memory', size: SIZE, alignment: 512, maxTransfer });
          for (const batch of batches) {
            // Each batch runs concurrently (overlapping writes included), batches one after another.
            const [a, b] = await Promise.all([
              Promise.all(batch.map((op) => apply(plain, op))),
              Promise.all(batch.map((op) => apply(aligned, op))),
            ]);
            for (let i = 0; i < batch.length; i++) {
              if (batch[i].kind === 'read' && !batch.some((o) => o.kind !== 'read')) expect(firstDifference(b[i]!, a[i]!)).toBe(-1);
            }
          }
          expect(firstDifference(await aligned.read(0, SIZE), await plain.read(0, SIZE))).toBe(-1);
          await layer.close();
        },
      ),
      { numRuns: Number(process.env.PROP_RUNS ?? 150) },
    );
  });

  it('requests larger than the maximum transfer are split and land in the right place', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: SIZE, alignment: 512, maxTransfer: 1024 });
    const data = new Uint8Array(10_000).map((_, i) => i % 251);
    await d.write(777, data);
    expect(await d.read(777, 10_000)).toEqual(Buffer.from(data));
  });
});
