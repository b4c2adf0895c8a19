import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GranuleSet } from '../../src/node/granule-set.js';

/** A model: a plain Set of granule numbers. */
function modelRuns(model: Set<number>, from: number, limit: number): [number, number][] {
  const out: [number, number][] = [];
  for (let g = from; g < limit; g++) {
    if (!model.has(g)) continue;
    const start = g;
    while (g < limit && model.has(g)) g++;
    out.push([start, g]);
  }
  return out;
}

describe('GranuleSet', () => {
  it('adds and removes ranges across pages and keeps the count', () => {
    const s = new GranuleSet(100_000);
    s.add(4090, 4200);
    expect(s.count).toBe(110);
    expect(s.has(4089)).toBe(false);
    expect(s.has(4090)).toBe(true);
    expect(s.has(4199)).toBe(true);
    expect(s.has(4200)).toBe(false);
    s.remove(4095, 4097);
    expect(s.count).toBe(108);
    expect([...s.runs()]).toEqual([
      [4090, 4095],
      [4097, 4200],
    ]);
    s.remove(0, 100_000);
    expect(s.count).toBe(0);
    expect(s.pageBytes).toBe(0);
  });

  it('clips to its size and finds gaps and members', () => {
    const s = new GranuleSet(70);
    s.add(60, 1000);
    expect(s.count).toBe(10);
    expect(s.next(0, true)).toBe(60);
    expect(s.next(60, false)).toBe(70);
    expect(s.next(0, false)).toBe(0);
    expect(s.next(65, true, 63)).toBe(63);
  });

  it('costs little for a huge sparse set (16 TiB at 64 KiB, 10,000 scattered granules)', () => {
    const granules = (16 * 2 ** 40) / 65536;
    const s = new GranuleSet(granules);
    for (let i = 0; i < 10_000; i++) s.add(i * 26_843 + 7, i * 26_843 + 8);
    expect(s.count).toBe(10_000);
    expect(s.pageBytes).toBeLessThan(16 * 2 ** 20);
    let n = 0;
    for (const [a, b] of s.runs()) n += b - a;
    expect(n).toBe(10_000);
  });

  it('union and replace keep counts exact, including a smaller target', () => {
    const a = new GranuleSet(5000);
    const b = new GranuleSet(9000);
    a.add(10, 20);
    b.add(15, 30);
    b.add(4990, 8000);
    a.unionWith(b);
    expect(a.count).toBe(20 + 10);
    expect([...a.runs()]).toEqual([
      [10, 30],
      [4990, 5000],
    ]);
    const c = a.clone();
    a.clear();
    expect(c.count).toBe(30);
    a.replaceWith(c);
    expect([...a.runs()]).toEqual([...c.runs()]);
  });

  it('agrees with a model set under any sequence of adds, removes, clears and unions', () => {
    const size = 3 * 4096 + 77;
    const range = fc.tuple(fc.integer({ min: 0, max: size + 50 }), fc.integer({ min: 0, max: 9000 })).map(([a, l]) => [a, a + l] as const);
    const op = fc.oneof(
      range.map((r) => ({ kind: 'add' as const, r })),
      range.map((r) => ({ kind: 'remove' as const, r })),
      fc.constant({ kind: 'clear' as const, r: [0, 0] as const }),
      range.map((r) => ({ kind: 'union' as const, r })),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), fc.integer({ min: 0, max: size }), (ops, from) => {
        const s = new GranuleSet(size);
        const model = new Set<number>();
        for (const { kind, r } of ops) {
          const [a, b] = r;
          if (kind === 'add') {
            s.add(a, b);
            for (let g = a; g < Math.min(b, size); g++) model.add(g);
          } else if (kind === 'remove') {
            s.remove(a, b);
            for (let g = a; g < b; g++) model.delete(g);
          } else if (kind === 'clear') {
            s.clear();
            model.clear();
          } else {
            const other = new GranuleSet(size + 100);
            other.add(a, b);
            s.unionWith(other);
            for (let g = a; g < Math.min(b, size); g++) model.add(g);
          }
        }
        expect(s.count).toBe(model.size);
        expect([...s.runs(from)]).toEqual(modelRuns(model, from, size));
        const gap = s.next(from, false);
        let expected = from;
        while (expected < size && model.has(expected)) expected++;
        expect(gap).toBe(expected);
      }),
      { numRuns: 300 },
    );
  });

  it('single-granule adds (the write path, through the remembered page) interleaved with removes, clears and walks agree with a model', () => {
    const size = 4 * 4096 + 5;
    const granule = fc.integer({ min: 0, max: size + 3 });
    const op = fc.oneof(
      { weight: 4, arbitrary: granule.map((g) => ({ kind: 'add' as const, g, n: 1 })) },
      { weight: 2, arbitrary: fc.tuple(granule, fc.integer({ min: 1, max: 9000 })).map(([g, n]) => ({ kind: 'remove' as const, g, n })) },
      { weight: 1, arbitrary: fc.constant({ kind: 'clear' as const, g: 0, n: 0 }) },
      { weight: 2, arbitrary: granule.map((g) => ({ kind: 'walk' as const, g, n: 0 })) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const s = new GranuleSet(size);
        const model = new Set<number>();
        for (const { kind, g, n } of ops) {
          if (kind === 'add') {
            s.add(g, g + 1);
            if (g < size) model.add(g);
            expect(s.has(g)).toBe(g < size);
          } else if (kind === 'remove') {
            s.remove(g, g + n);
            for (let x = g; x < g + n; x++) model.delete(x);
          } else if (kind === 'clear') {
            s.clear();
            model.clear();
          } else {
            const from = Math.min(g, size);
            expect([...s.runs(from)]).toEqual(modelRuns(model, from, size));
            let member = from;
            while (member < size && !model.has(member)) member++;
            expect(s.next(from, true)).toBe(member);
          }
          expect(s.count).toBe(model.size);
        }
        expect([...s.runs()]).toEqual(modelRuns(model, 0, size));
      }),
      { numRuns: 300 },
    );
  });
});
