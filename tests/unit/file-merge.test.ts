import { describe, expect, it } from 'vitest';
import { AdjacentMerger, type Single, type Vectored } from '../../src/drivers/file/merge.js';

/** Lets the merger's process.nextTick flush run, then the callbacks it scheduled. */
const turn = () => new Promise((r) => setImmediate(r));

/** A fake engine: records calls; vectored calls complete with `answer` (bytes or an error) on the next turn. */
function fake(answer: (buffers: Uint8Array[]) => number | Error = (b) => b.reduce((n, x) => n + x.length, 0)) {
  const vectoredCalls: { position: number; sizes: number[] }[] = [];
  const singleCalls: { offset: number; done: number }[] = [];
  const vectored: Vectored = (_fd, buffers, position, cb) => {
    vectoredCalls.push({ position, sizes: buffers.map((b) => b.length) });
    const a = answer(buffers);
    setImmediate(() => (a instanceof Error ? cb(a, 0) : cb(null, a)));
  };
  const single: Single = (offset, _buffer, done, resolve, reject) => {
    singleCalls.push({ offset, done });
    // A request at offset 666 fails on its own; the others succeed.
    setImmediate(() => (offset === 666 ? reject(new Error(`EIO at ${offset}`)) : resolve()));
  };
  return { vectored, single, vectoredCalls, singleCalls };
}

const settle = (m: AdjacentMerger, offset: number, len: number) =>
  new Promise<string>((resolve) => m.add(offset, new Uint8Array(len), () => resolve('ok'), (e) => resolve(String(e))));

describe('AdjacentMerger (threads engine: adjacent requests of one turn as one vectored call)', () => {
  it('sends a run of adjacent requests of one turn as one call, in order, and settles each', async () => {
    const f = fake();
    const m = new AdjacentMerger(3, f.vectored, f.single);
    const done = Promise.all([0, 4096, 8192, 12288].map((o) => settle(m, o, 4096)));
    await turn();
    expect(f.vectoredCalls).toEqual([{ position: 0, sizes: [4096, 4096, 4096, 4096] }]);
    expect(f.singleCalls).toEqual([]);
    expect(await done).toEqual(['ok', 'ok', 'ok', 'ok']);
  });

  it('sends non-adjacent requests one by one, and breaks runs where the next one does not follow', async () => {
    const f = fake();
    const m = new AdjacentMerger(3, f.vectored, f.single);
    const done = Promise.all([
      settle(m, 0, 512),
      settle(m, 512, 512),
      settle(m, 8192, 4096), // a gap
      settle(m, 100_000, 4096),
      settle(m, 104_096, 1024),
    ]);
    await turn();
    expect(f.vectoredCalls).toEqual([
      { position: 0, sizes: [512, 512] },
      { position: 100_000, sizes: [4096, 1024] },
    ]);
    expect(f.singleCalls).toEqual([{ offset: 8192, done: 0 }]);
    expect(await done).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
  });

  it('requests of different turns are not merged', async () => {
    const f = fake();
    const m = new AdjacentMerger(3, f.vectored, f.single);
    const a = settle(m, 0, 4096);
    await turn();
    const b = settle(m, 4096, 4096);
    await turn();
    expect(f.vectoredCalls).toEqual([]);
    expect(f.singleCalls).toEqual([
      { offset: 0, done: 0 },
      { offset: 4096, done: 0 },
    ]);
    expect([await a, await b]).toEqual(['ok', 'ok']);
  });

  it('a merged call that fails is retried request by request, each settling with its own outcome', async () => {
    const f = fake(() => Object.assign(new Error('EIO'), { code: 'EIO' }));
    const m = new AdjacentMerger(3, f.vectored, f.single);
    const done = Promise.all([0, 333, 666, 999].map((o) => settle(m, o, 333)));
    await turn();
    expect(f.vectoredCalls).toHaveLength(1);
    expect(await done).toEqual(['ok', 'ok', 'Error: EIO at 666', 'ok']);
    expect(f.singleCalls).toEqual([0, 333, 666, 999].map((offset) => ({ offset, done: 0 })));
  });

  it('a short transfer settles what it covered and continues the rest where each stopped', async () => {
    const f = fake(() => 4096 + 1000); // e.g. the end of the file inside the second request
    const ends: number[] = [];
    const m = new AdjacentMerger(3, f.vectored, f.single, (end) => ends.push(end));
    const done = Promise.all([0, 4096, 8192].map((o) => settle(m, o, 4096)));
    await turn();
    expect(await done).toEqual(['ok', 'ok', 'ok']);
    expect(f.singleCalls).toEqual([
      { offset: 4096, done: 1000 },
      { offset: 8192, done: 0 },
    ]);
    expect(ends).toEqual([5096]); // a write grows the file to where its bytes end
  });

  it('caps a merged call at 256 requests and 1 MiB', async () => {
    const f = fake();
    const m = new AdjacentMerger(3, f.vectored, f.single);
    const small = Array.from({ length: 300 }, (_, i) => settle(m, i * 512, 512));
    await turn();
    expect(f.vectoredCalls.map((c) => c.sizes.length)).toEqual([256, 44]);
    await Promise.all(small);
    f.vectoredCalls.length = 0;
    // (continuing where the small ones ended, so the first one waits for the turn too)
    const big = Array.from({ length: 5 }, (_, i) => settle(m, 153_600 + i * 400_000, 400_000));
    await turn();
    expect(f.vectoredCalls.map((c) => c.sizes.length)).toEqual([2, 2]);
    expect(f.singleCalls.at(-1)).toEqual({ offset: 153_600 + 1_600_000, done: 0 });
    await Promise.all(big);
  });

  it('a request that does not start where the previous one ended goes at once, without waiting for the turn', async () => {
    const f = fake();
    const m = new AdjacentMerger(3, f.vectored, f.single);
    const a = settle(m, 65536, 4096); // random: issued synchronously
    expect(f.singleCalls).toEqual([{ offset: 65536, done: 0 }]);
    const b = settle(m, 69632, 4096); // follows it: waits for the turn
    const c = settle(m, 8192, 4096); // arrives while one waits: waits too (order kept)
    expect(f.singleCalls).toHaveLength(1);
    await turn();
    expect(f.singleCalls).toEqual([
      { offset: 65536, done: 0 },
      { offset: 69632, done: 0 },
      { offset: 8192, done: 0 },
    ]);
    expect(await Promise.all([a, b, c])).toEqual(['ok', 'ok', 'ok']);
  });

  it('with two calls of its own in flight, requests arriving turn by turn gather and go as one call once one completes', async () => {
    const f = fake();
    const m = new AdjacentMerger(3, f.vectored, f.single);
    const tick = () => new Promise((r) => process.nextTick(r));
    const a = settle(m, 0, 4096);
    await tick();
    const b = settle(m, 4096, 4096);
    await tick();
    expect(f.singleCalls).toEqual([
      { offset: 0, done: 0 },
      { offset: 4096, done: 0 },
    ]);
    // Each of these alone in its turn: without the limit each would go alone as well.
    const rest = [];
    for (let k = 2; k < 6; k++) {
      rest.push(settle(m, k * 4096, 4096));
      await tick();
    }
    expect(f.singleCalls).toHaveLength(2);
    expect(f.vectoredCalls).toEqual([]);
    expect(await Promise.all([a, b])).toEqual(['ok', 'ok']);
    await turn();
    expect(f.vectoredCalls).toEqual([{ position: 8192, sizes: [4096, 4096, 4096, 4096] }]);
    expect(await Promise.all(rest)).toEqual(['ok', 'ok', 'ok', 'ok']);
  });

  it('flush() issues what is queued at once (a drive flush follows the writes issued before it)', () => {
    const f = fake();
    const m = new AdjacentMerger(3, f.vectored, f.single);
    void settle(m, 0, 4096);
    void settle(m, 4096, 4096);
    m.flush();
    expect(f.vectoredCalls).toEqual([{ position: 0, sizes: [4096, 4096] }]);
  });
});

describe('AdjacentMerger memory', () => {
  it('holds no buffer or callback of a request once its turn is issued, also after a burst', async () => {
    const f = fake();
    const m = new AdjacentMerger(3, f.vectored, f.single);
    const held = () => {
      const o = m as unknown as { buffers: Uint8Array[]; resolves: unknown[] };
      return { buffers: o.buffers.filter((b) => b.length > 0).length, length: o.buffers.length };
    };
    const few = Array.from({ length: 10 }, (_, i) => settle(m, i * 4096, 4096));
    await turn();
    expect(held()).toEqual({ buffers: 0, length: 10 });
    await Promise.all(few);
    const burst = Array.from({ length: 5000 }, (_, i) => settle(m, 40_960 + i * 8192, 4096));
    await turn();
    expect(held()).toEqual({ buffers: 0, length: 0 });
    await Promise.all(burst);
  });
});
