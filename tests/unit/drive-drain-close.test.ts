import { describe, expect, it } from 'vitest';
import { BlockLayer, type BlockNode, type Drive, VirtualClock } from '../../src/index.js';

const KiB = 1024;

/** Lets every pending microtask and I/O callback run a few times over (the virtual clock stays where it is). */
async function spin(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** A memory node kept open by the test, and a raw drive on it with the given throttle options. */
async function setup(throttle: Record<string, unknown>, ids: string[] = ['d0']) {
  const clock = new VirtualClock();
  const layer = new BlockLayer({ clock });
  const mems: BlockNode[] = [];
  const drives: Drive[] = [];
  for (const id of ids) {
    const mem = await layer.openNode({ driver: 'memory', size: '1M' });
    mems.push(mem);
    drives.push(await layer.openDrive({ id, driver: 'raw', file: mem, throttle }));
  }
  return { clock, layer, mems, drives };
}

/** `n` writes of 4 KiB, write i filled with i + 1 (at i * 4 KiB); counts how often each settled and how. */
function writes(d: Drive, n: number, base = 0) {
  const resolved = new Array<number>(n).fill(0);
  const rejected = new Array<number>(n).fill(0);
  const all = Array.from({ length: n }, (_, i) =>
    d.write(base + i * 4 * KiB, new Uint8Array(4 * KiB).fill(i + 1)).then(
      () => resolved[i]++,
      () => rejected[i]++,
    ),
  );
  return { resolved, rejected, all };
}

async function expectWritten(mem: BlockNode, n: number, base = 0): Promise<void> {
  for (let i = 0; i < n; i++) {
    const b = new Uint8Array(4 * KiB);
    await mem.read(base + i * 4 * KiB, b);
    expect(b.every((x) => x === i + 1)).toBe(true);
  }
}

describe('closing a throttled drive lets its queue go now (QEMU drains with io limits disabled)', () => {
  it('bpsWrite 1 and six queued writes: close() resolves without the clock moving, each write resolves once, the data is in the node', async () => {
    const { clock, layer, mems, drives } = await setup({ bpsWrite: 1 });
    const d = drives[0];
    const w = writes(d, 6);
    await spin();
    // The first write went (the bucket starts empty); the others wait for 4 KiB/s... at 1 B/s.
    expect(d.stats().throttle?.queuedWrites).toBe(5);
    let closed = false;
    const closing = d.close().then(() => (closed = true));
    // Arriving during close: refused cleanly, never queued.
    await expect(d.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'ECLOSED' });
    await spin();
    expect(closed).toBe(true);
    await closing;
    await Promise.all(w.all);
    expect(clock.now()).toBe(0);
    expect(w.resolved).toEqual([1, 1, 1, 1, 1, 1]);
    expect(w.rejected).toEqual([0, 0, 0, 0, 0, 0]);
    await expectWritten(mems[0], 6);
    await mems[0].unref();
    await layer.close();
  });

  it('in a group of two, closing one member lets its own queue go now; the other keeps waiting for the limits', async () => {
    const { clock, layer, mems, drives } = await setup({ bpsWrite: 1, group: 'g' }, ['a', 'b']);
    const [a, b] = drives;
    const wa = writes(a, 4);
    const wb = writes(b, 4);
    await spin();
    expect(a.stats().throttle!.queuedWrites + b.stats().throttle!.queuedWrites).toBe(7);
    let closed = false;
    const closing = a.close().then(() => (closed = true));
    await spin();
    expect(closed).toBe(true);
    await closing;
    expect(clock.now()).toBe(0);
    expect(wa.resolved).toEqual([1, 1, 1, 1]);
    await expectWritten(mems[0], 4);
    // b's queued writes are still held by the group's limits (only a was drained).
    const stillQueued = b.stats().throttle!.queuedWrites;
    expect(stillQueued).toBeGreaterThan(0);
    expect(wb.resolved.filter((n) => n === 1)).toHaveLength(4 - stillQueued);
    await clock.advance(1000); // a second at 1 B/s frees nothing
    await spin();
    expect(b.stats().throttle!.queuedWrites).toBe(stillQueued);
    // Closing b in turn lets the rest go, without advancing the clock further.
    const now = clock.now();
    await b.close();
    expect(clock.now()).toBe(now);
    await Promise.all(wb.all);
    expect(wb.resolved).toEqual([1, 1, 1, 1]);
    expect(wb.rejected).toEqual([0, 0, 0, 0]);
    await expectWritten(mems[1], 4);
    for (const m of mems) await m.unref();
    await layer.close();
  });
});

describe('closing a drive over throttle filter nodes (QEMU driver=throttle): the filters stay drained for the whole section', () => {
  // The drive's queue, or an outer filter, lets requests go now; they reach the filter below a
  // moment later, after its one-shot drain: it must still let them through at once.
  for (const shape of ['stacked filters', 'drive limits over a filter'] as const) {
    it(`${shape} at 1 byte/s with queued writes: close() resolves without the clock moving, every write resolves once, the data is in the node`, async () => {
      const clock = new VirtualClock();
      const layer = new BlockLayer({ clock });
      layer.createThrottleGroup('outer', { bpsWrite: 1 });
      layer.createThrottleGroup('inner', { bpsWrite: 1 });
      const mem = await layer.openNode({ driver: 'memory', size: '1M' });
      const inner = { driver: 'throttle', throttleGroup: 'inner', file: mem };
      const d =
        shape === 'stacked filters'
          ? await layer.openDrive({ driver: 'throttle', throttleGroup: 'outer', file: inner })
          : await layer.openDrive({ ...inner, throttle: { bpsWrite: 1 } });
      const w = writes(d, 4);
      await spin();
      expect(w.resolved).toEqual([1, 0, 0, 0]);
      let closed = false;
      const closing = d.close().then(() => (closed = true));
      await spin();
      expect(closed).toBe(true);
      await closing;
      expect(clock.now()).toBe(0);
      expect(w.resolved).toEqual([1, 1, 1, 1]);
      expect(w.rejected).toEqual([0, 0, 0, 0]);
      await expectWritten(mem, 4);
      // The groups are as they were: a new drive over the inner group is throttled (the lift ended).
      expect(layer.throttleGroup('inner')?.size).toBe(0);
      await mem.unref();
      await layer.close();
    });
  }

  it('liftThrottling lifts the filters below too, until it ends', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    layer.createThrottleGroup('inner', { bpsWrite: 1 });
    const d = await layer.openDrive({ driver: 'throttle', throttleGroup: 'inner', file: { driver: 'memory', size: '1M' } });
    const w = writes(d, 3);
    await spin();
    expect(w.resolved).toEqual([1, 0, 0]);
    const unlift = d.liftThrottling();
    await spin();
    expect(w.resolved).toEqual([1, 1, 1]);
    const during = writes(d, 2, 64 * KiB);
    await spin();
    expect(during.resolved).toEqual([1, 1]);
    unlift();
    const after = writes(d, 1, 128 * KiB);
    await spin();
    expect(after.resolved).toEqual([0]);
    expect(clock.now()).toBe(0);
    await d.close();
    expect(after.resolved).toEqual([1]);
    await layer.close();
  });
});

describe('Drive.liftThrottling (a drained section that holds nothing, as an NBD export drains)', () => {
  it('queued requests go now, new ones go at once and are not held; after the lift they are throttled again', async () => {
    const { clock, layer, mems, drives } = await setup({ bpsWrite: 1 });
    const d = drives[0];
    const w = writes(d, 4);
    await spin();
    expect(d.stats().throttle?.queuedWrites).toBe(3);
    const unlift = d.liftThrottling();
    await spin();
    expect(w.resolved).toEqual([1, 1, 1, 1]);
    // While lifted: new writes neither wait for the limits nor for the lift to end.
    const during = writes(d, 3, 64 * KiB);
    await spin();
    expect(during.resolved).toEqual([1, 1, 1]);
    expect(d.stats().throttle?.queuedWrites).toBe(0);
    unlift();
    unlift(); // ends its own lift once
    const after = writes(d, 1, 128 * KiB);
    await spin();
    expect(after.resolved).toEqual([0]);
    expect(d.stats().throttle?.queuedWrites).toBe(1);
    // Still accounted: 7 writes went through the drive's stats.
    expect(d.stats().wrOperations).toBe(7);
    expect(clock.now()).toBe(0);
    await d.close();
    expect(after.resolved).toEqual([1]);
    await expectWritten(mems[0], 4);
    await expectWritten(mems[0], 3, 64 * KiB);
    for (const m of mems) await m.unref();
    await layer.close();
  });

  it('in a group whose other member holds the timer, a lifted member goes at once; the other keeps its limits', async () => {
    const { clock, layer, drives } = await setup({ bpsWrite: 1, group: 'g' }, ['a', 'b']);
    const [a, b] = drives;
    const wb = writes(b, 3);
    await spin();
    expect(b.stats().throttle?.queuedWrites).toBe(2);
    const unlift = a.liftThrottling();
    const wa = writes(a, 3);
    await spin();
    expect(wa.resolved).toEqual([1, 1, 1]);
    expect(b.stats().throttle?.queuedWrites).toBe(2);
    expect(wb.resolved).toEqual([1, 0, 0]);
    unlift();
    // Nested lifts: the drive stays lifted until the last one ends.
    const u1 = a.liftThrottling();
    const u2 = a.liftThrottling();
    u1();
    const wa2 = writes(a, 1, 64 * KiB);
    await spin();
    expect(wa2.resolved).toEqual([1]);
    u2();
    expect(clock.now()).toBe(0);
    await layer.close();
    expect(wb.resolved).toEqual([1, 1, 1]);
  });

  it('a lift survives a move to another group; limits that are all zero end throttling as before', async () => {
    const { layer, drives } = await setup({ bpsWrite: 1 }, ['a']);
    const [a] = drives;
    const unlift = a.liftThrottling();
    a.setLimits({ bpsWrite: 1, group: 'elsewhere' });
    const w = writes(a, 3);
    await spin();
    expect(w.resolved).toEqual([1, 1, 1]);
    unlift();
    // The lifted writes were charged to the new group: the next ones wait.
    const after = writes(a, 2, 64 * KiB);
    await spin();
    expect(a.stats().throttle?.queuedWrites).toBe(2);
    a.setLimits({ bpsWrite: 0 });
    await spin();
    expect(after.resolved).toEqual([1, 1]);
    await layer.close();
  });
});
