import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { convertPipeline } from '../../src/tools/convert-pipeline.js';

const KiB = 1024;

describe('convertPipeline with several writes at once', () => {
  it('begins pieces in guest order, never more than `writes` at once, each byte written once, rebuilds the image; progress strictly increases to the size (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ hole: fc.boolean(), length: fc.integer({ min: 1, max: 300 * KiB }), byte: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.nat(3), { minLength: 1, maxLength: 16 }),
        async (stretches, depth, writes, delays) => {
          const layer = new BlockLayer();
          try {
            const size = stretches.reduce((n, s) => n + s.length, 0);
            const drive = await layer.openDrive({ driver: 'memory', size });
            const model = new Uint8Array(size);
            let at = 0;
            for (const s of stretches) {
              if (!s.hole) {
                const data = new Uint8Array(s.length).fill(s.byte);
                await drive.write(at, data);
                model.set(data, at);
              }
              at += s.length;
            }
            const out = new Uint8Array(size);
            const written = new Uint8Array(size);
            let overlaps = 0;
            let inFlight = 0;
            let most = 0;
            let lastBegun = -1;
            let n = 0;
            const seen: number[] = [];
            await convertPipeline(
              drive,
              {
                grain: 4096,
                write: async (offset, data) => {
                  // pieces begin in guest order; a piece's later runs may begin after the next piece's first
                  expect(offset).toBeGreaterThan(lastBegun - writes * 64 * KiB);
                  lastBegun = Math.max(lastBegun, offset);
                  if (written.subarray(offset, offset + data.length).some((x) => x !== 0)) overlaps++;
                  written.fill(1, offset, offset + data.length);
                  const copy = Uint8Array.from(data);
                  inFlight++;
                  most = Math.max(most, inFlight);
                  // writes end out of order: later ones may finish first
                  for (let i = delays[n++ % delays.length]; i > 0; i--) await new Promise((r) => setImmediate(r));
                  out.set(copy, offset);
                  inFlight--;
                },
              },
              { chunk: 64 * KiB, depth, writes, stop: () => {}, progress: (done) => seen.push(done) },
            );
            expect(overlaps).toBe(0);
            expect(most).toBeLessThanOrEqual(Math.min(writes, depth));
            expect(Buffer.from(out).equals(Buffer.from(model))).toBe(true);
            expect(seen.at(-1)).toBe(size);
            expect(seen.every((d, i) => i === 0 || d > seen[i - 1])).toBe(true);
          } finally {
            await layer.close();
          }
        },
      ),
      { numRuns: 40 },
    );
  }, 60_000);

  it('a failed write rejects the conversion once the writes in flight have settled', async () => {
    const layer = new BlockLayer();
    try {
      const drive = await layer.openDrive({ driver: 'memory', size: 1024 * KiB });
      await drive.write(0, new Uint8Array(1024 * KiB).fill(9));
      let settled = 0;
      let begun = 0;
      const failure = new Error('disk full');
      const p = convertPipeline(
        drive,
        {
          grain: 4096,
          write: async (offset) => {
            begun++;
            await new Promise((r) => setImmediate(r));
            settled++;
            if (offset === 128 * KiB) throw failure;
          },
        },
        { chunk: 64 * KiB, depth: 4, writes: 3, stop: () => {}, progress: () => {} },
      );
      await expect(p).rejects.toBe(failure);
      expect(settled).toBe(begun);
      expect(begun).toBeLessThan(16);
    } finally {
      await layer.close();
    }
  });
});
