import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GranuleSet, type RunSink } from '../../src/node/granule-set.js';

/** Collects the runs of a walk as [end, member] pairs; stops after `max` of them. */
function walk(set: GranuleSet, from: number, limit: number, max = Number.POSITIVE_INFINITY): [number, boolean][] {
  const out: [number, boolean][] = [];
  const sink: RunSink = {
    run(end, member) {
      out.push([end, member]);
      return out.length < max;
    },
  };
  set.walkRuns(from, limit, sink);
  return out;
}

/** The runs of `[from, limit)` as a per-granule model sees them. */
function modelRuns(model: boolean[], from: number, limit: number): [number, boolean][] {
  const out: [number, boolean][] = [];
  limit = Math.min(limit, model.length);
  for (let g = from; g < limit; ) {
    const member = model[g] as boolean;
    let end = g + 1;
    while (end < limit && model[end] === member) end++;
    out.push([end, member]);
    g = end;
  }
  return out;
}

describe('GranuleSet.walkRuns', () => {
  it('property: the runs alternate and match a per-granule model, across pages present and absent', () => {
    // Granule numbers cluster in a few 4096-granule pages so that some exist and some do not.
    const SIZE = 6 * 4096 + 77;
    const granule = fc.oneof(fc.nat(SIZE - 1), fc.constantFrom(0, 4095, 4096, 8191, 8192, 3 * 4096 - 1, 5 * 4096, SIZE - 1));
    fc.assert(
      fc.property(fc.array(fc.tuple(granule, fc.integer({ min: 1, max: 9000 }), fc.boolean()), { maxLength: 30 }), granule, granule, (ops, a, b) => {
        const set = new GranuleSet(SIZE);
        const model: boolean[] = new Array(SIZE).fill(false);
        for (const [first, n, add] of ops) {
          const end = Math.min(SIZE, first + n);
          if (add) set.add(first, end);
          else set.remove(first, end);
          for (let g = first; g < end; g++) model[g] = add;
        }
        const from = Math.min(a, b);
        const limit = Math.max(a, b) + 1;
        const got = walk(set, from, limit);
        expect(got).toEqual(modelRuns(model, from, limit));
        for (let i = 1; i < got.length; i++) expect(got[i]?.[1]).toBe(!got[i - 1]?.[1]);
        // Stopped after the first run: only that one.
        expect(walk(set, from, limit, 1)).toEqual(got.slice(0, 1));
      }),
      { numRuns: 300 },
    );
  });

  it('a run that ends at a page boundary, a page that is absent, a limit past the size', () => {
    const set = new GranuleSet(4 * 4096);
    set.add(4000, 4096); // up to the end of page 0
    set.add(3 * 4096, 3 * 4096 + 1); // page 3's first granule; pages 1 and 2 absent
    expect(walk(set, 0, 10 * 4096)).toEqual([
      [4000, false],
      [4096, true],
      [3 * 4096, false],
      [3 * 4096 + 1, true],
      [4 * 4096, false],
    ]);
    expect(walk(set, 4096, 3 * 4096)).toEqual([[3 * 4096, false]]);
    expect(walk(set, 4095, 4097)).toEqual([
      [4096, true],
      [4097, false],
    ]);
    expect(walk(set, 5, 5)).toEqual([]);
  });
});
