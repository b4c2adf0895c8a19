import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { forEachChunk, pieceSize, sectorRun } from '../../src/tools/chunk-pool.js';

describe('forEachChunk', () => {
  it('covers [0, size) exactly once, in pieces begun in offset order, never more than `parallel` at once', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 16, max: 700 }), fc.integer({ min: 1, max: 6 }), async (size, chunk, parallel) => {
        const seen: [number, number][] = [];
        let running = 0;
        let most = 0;
        await forEachChunk(size, { chunk, parallel }, async (offset, length, slot) => {
          expect(slot).toBeLessThan(parallel);
          seen.push([offset, length]);
          running++;
          most = Math.max(most, running);
          for (let i = (offset * 7) % 3; i > 0; i--) await new Promise((r) => setImmediate(r));
          running--;
        });
        expect(most).toBeLessThanOrEqual(parallel);
        let at = 0;
        for (const [offset, length] of seen) {
          expect(offset).toBe(at);
          at += length;
        }
        expect(at).toBe(size);
      }),
      { numRuns: 60 },
    );
  });

  it('begins no piece at or past stopAt(), and rejects with the first failure after the pieces in flight settle', async () => {
    const begun: number[] = [];
    await forEachChunk(100, { chunk: 10, parallel: 2, stopAt: () => 35 }, async (offset) => void begun.push(offset));
    expect(begun).toEqual([0, 10, 20, 30]);
    let settled = 0;
    const failing = forEachChunk(100, { chunk: 10, parallel: 3 }, async (offset) => {
      await new Promise((r) => setTimeout(r, offset === 10 ? 1 : 20));
      settled++;
      if (offset === 10) throw new Error('piece 10');
    });
    await expect(failing).rejects.toThrow('piece 10');
    expect(settled).toBe(3);
  });

  it('an aborted signal stops it with the given error', async () => {
    const ac = new AbortController();
    const done: number[] = [];
    const p = forEachChunk(100, { chunk: 10, parallel: 1, signal: ac.signal, canceled: () => new Error('stopped') }, async (offset) => {
      done.push(offset);
      if (offset === 20) ac.abort();
    });
    await expect(p).rejects.toThrow('stopped');
    expect(done).toEqual([0, 10, 20]);
  });
});

describe('pieceSize and sectorRun', () => {
  it('pieceSize is a multiple of the unit between the unit and 256 MiB', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 50 }), fc.integer({ min: 1, max: 8 }), fc.constantFrom(512, 65536, 2 ** 21), (size, parallel, unit) => {
        const p = pieceSize(size, parallel, unit);
        expect(p % unit).toBe(0);
        expect(p).toBeGreaterThanOrEqual(unit);
        expect(p).toBeLessThanOrEqual(Math.max(unit, 256 * 2 ** 20));
      }),
    );
  });

  it('sectorRun counts the leading 512-byte sectors that are (or are not) the same', () => {
    const a = new Uint8Array(2000);
    const b = new Uint8Array(2000);
    b[1100] = 1;
    expect(sectorRun(a, b, 0, true)).toBe(1024);
    expect(sectorRun(a, b, 1024, false)).toBe(512);
    expect(sectorRun(a, b, 1536, true)).toBe(464); // the short last sector
    b[1999] = 1;
    expect(sectorRun(a, b, 1536, true)).toBe(0); // the last sector differs now
    expect(sectorRun(a, b, 1536, false)).toBe(464);
  });
});
