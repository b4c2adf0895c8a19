import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ClusterRangeQueue, type RangeTicket } from '../../src/drivers/qcow2/async-lock.js';

const overlap = (a: { start: number; end: number }, b: { start: number; end: number }) => a.start < b.end && b.start < a.end;

/** Resolves after every promise reaction queued so far has run. */
const settle = () => new Promise<void>((r) => setImmediate(r));

describe('the cluster range queue', () => {
  it('gives the ticket at once, without a promise, when no earlier request overlaps', () => {
    const q = new ClusterRangeQueue();
    const a = q.enter(0, 10);
    const b = q.enter(10, 20);
    expect(a).not.toBeInstanceOf(Promise);
    expect(b).not.toBeInstanceOf(Promise);
    expect(q.overlaps(5, 15)).toBe(true);
    q.leave(a as RangeTicket);
    expect(q.overlaps(0, 10)).toBe(false);
    expect(q.overlaps(10, 11)).toBe(true);
    q.leave(b as RangeTicket);
    expect(q.overlaps(0, 100)).toBe(false);
  });

  it('makes an overlapping request wait until every earlier overlapping one has left', async () => {
    const q = new ClusterRangeQueue();
    const a = q.enter(0, 10) as RangeTicket;
    const b = q.enter(20, 30) as RangeTicket;
    const c = q.enter(5, 25);
    expect(c).toBeInstanceOf(Promise);
    let got: RangeTicket | undefined;
    void (c as Promise<RangeTicket>).then((t) => (got = t));
    q.leave(a);
    await settle();
    expect(got).toBeUndefined();
    // A later request overlapping only the waiting one waits for it too (arrival order).
    const d = q.enter(12, 14);
    expect(d).toBeInstanceOf(Promise);
    q.leave(b);
    await settle();
    expect(got).toMatchObject({ start: 5, end: 25 });
    let gotD = false;
    void (d as Promise<RangeTicket>).then(() => (gotD = true));
    await settle();
    expect(gotD).toBe(false);
    q.leave(got!);
    await settle();
    expect(gotD).toBe(true);
  });

  it('leaving twice, or in any order, keeps the others in the queue', () => {
    const q = new ClusterRangeQueue();
    const ts = [0, 1, 2, 3].map((i) => q.enter(i * 10, i * 10 + 10) as RangeTicket);
    q.leave(ts[1]!);
    q.leave(ts[1]!);
    q.leave(ts[0]!);
    expect(q.overlaps(0, 20)).toBe(false);
    expect(q.overlaps(20, 30)).toBe(true);
    expect(q.overlaps(30, 40)).toBe(true);
    q.leave(ts[3]!);
    expect(q.overlaps(30, 40)).toBe(false);
    expect(q.overlaps(20, 30)).toBe(true);
  });

  it('runs a request only while no earlier overlapping one runs, and each one eventually (random schedules)', async () => {
    const range = fc.tuple(fc.nat(40), fc.integer({ min: 1, max: 10 })).map(([s, n]) => ({ start: s, end: s + n }));
    await fc.assert(
      fc.asyncProperty(fc.array(range, { minLength: 1, maxLength: 12 }), fc.array(fc.nat(), { minLength: 12, maxLength: 12 }), async (ranges, picks) => {
        const q = new ClusterRangeQueue();
        const running = new Map<number, RangeTicket>();
        const left = new Set<number>();
        const enter = (i: number) => {
          const r = q.enter(ranges[i]!.start, ranges[i]!.end);
          const admitted = (t: RangeTicket) => {
            // Every earlier overlapping request has left by now.
            for (let j = 0; j < i; j++) if (overlap(ranges[i]!, ranges[j]!)) expect(left.has(j)).toBe(true);
            running.set(i, t);
          };
          if (r instanceof Promise) void r.then(admitted);
          else admitted(r);
        };
        for (let i = 0; i < ranges.length; i++) enter(i);
        await settle();
        // The first request always runs at once.
        expect(running.has(0)).toBe(true);
        for (let step = 0; left.size < ranges.length; step++) {
          const ids = [...running.keys()];
          expect(ids.length).toBeGreaterThan(0);
          const id = ids[(picks[step % picks.length] ?? 0) % ids.length]!;
          const t = running.get(id)!;
          running.delete(id);
          left.add(id);
          q.leave(t);
          await settle();
        }
        expect(q.overlaps(0, 100)).toBe(false);
      }),
      { numRuns: 60 },
    );
  });
});
