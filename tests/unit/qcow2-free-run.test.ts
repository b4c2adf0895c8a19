import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { extendFreeRun, extendFreeRunFree, newFreeRun } from '../../src/drivers/qcow2/free-run.js';

/** Refcounts from an array, 0 past its end (as every view reads clusters it does not cover). */
const viewOf = (counts: number[]) => ({ get: (i: number) => counts[i] ?? 0 });

/** The first s >= from with [s, s + count) all free. */
function naiveFirstFit(counts: number[], from: number, count: number): number {
  for (let s = from; ; s++) {
    let ok = true;
    for (let i = s; i < s + count; i++) if ((counts[i] ?? 0) !== 0) ok = false;
    if (ok) return s;
  }
}

const refcounts = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3 })), { maxLength: 80 });

describe('the free-cluster search', () => {
  it('finds the first run of count free clusters at or after from, and the first free cluster', () => {
    fc.assert(
      fc.property(refcounts, fc.nat(90), fc.integer({ min: 1, max: 8 }), (counts, from, count) => {
        const run = newFreeRun(from);
        const end = extendFreeRun(viewOf(counts), from, Number.POSITIVE_INFINITY, count, run);
        const start = naiveFirstFit(counts, from, count);
        expect(run.length).toBe(count);
        expect(run.start).toBe(start);
        expect(end).toBe(start + count);
        let firstFree = from;
        while ((counts[firstFree] ?? 0) !== 0) firstFree++;
        expect(run.firstFree).toBe(firstFree);
      }),
    );
  });

  it('range by range (as over refcount blocks, some known free) finds the same run', () => {
    fc.assert(
      fc.property(refcounts, fc.nat(40), fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 16 }), (counts, from, count, block) => {
        const view = viewOf(counts);
        const whole = newFreeRun(from);
        extendFreeRun(view, from, Number.POSITIVE_INFINITY, count, whole);
        const run = newFreeRun(from);
        for (let i = from; run.length < count; ) {
          const end = (Math.floor(i / block) + 1) * block;
          // A range past the counts is all free: taken whole, as a missing refcount block is.
          if (i >= counts.length) {
            extendFreeRunFree(i, end, run);
            i = end;
          } else i = extendFreeRun(view, i, end, count, run);
        }
        expect(run.start).toBe(whole.start);
        expect(run.firstFree).toBe(whole.firstFree);
      }),
    );
  });

  it('stops at `to` with the partial run when no run fits before it', () => {
    const run = newFreeRun(0);
    expect(extendFreeRun(viewOf([1, 0, 0, 1, 0]), 0, 5, 3, run)).toBe(5);
    expect(run).toEqual({ start: 4, length: 1, firstFree: 1 });
  });
});
