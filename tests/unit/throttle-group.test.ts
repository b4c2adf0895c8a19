import { describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, type Drive, VirtualClock } from '../../src/index.js';
import type { ThrottleLimits } from '../../src/throttle/limits.js';

async function setup(n: number, throttle: Record<string, unknown> | undefined, ids = ['drive0', 'drive1', 'drive2', 'drive3']) {
  const clock = new VirtualClock();
  const layer = new BlockLayer({ clock });
  const drives: Drive[] = [];
  for (let i = 0; i < n; i++) {
    drives.push(await layer.openDrive({ id: ids[i], driver: 'null', size: '1G', ...(throttle ? { throttle } : {}) }));
  }
  return { clock, layer, drives };
}

describe('throttle groups (reference §3)', () => {
  it('a busy member alone in its group gets the whole group budget (M2 example = S1 timeline)', async () => {
    const { clock, drives } = await setup(2, { bpsRead: 4096, group: 'test' });
    const times: number[] = [];
    const all = Array.from({ length: 10 }, () => drives[1].read(0, 512).then(() => times.push(clock.now())));
    await clock.runUntilIdle();
    await Promise.all(all);
    const expected = [0, 24999999, 150e6, 275e6, 399999999, 524999999, 649999999, 774999999, 899999999, 1024999999];
    for (const [i, t] of times.entries()) expect(Math.abs(t - expected[i])).toBeLessThanOrEqual(1000);
  });

  it('under saturation admissions rotate in reverse registration order (new members at the head)', async () => {
    const { clock, drives } = await setup(3, { iopsRead: 10, group: 'g' });
    const order: string[] = [];
    const all: Promise<unknown>[] = [];
    for (const d of drives) for (let i = 0; i < 4; i++) all.push(d.read(0, 512).then(() => order.push(d.id)));
    await clock.runUntilIdle();
    await Promise.all(all);
    // drive0 goes first (its own requests may pass while the bucket has room), then the turn rotates d0 -> d2 -> d1.
    // drive0 fills the bucket (1 op) and passes twice at t=0, its timer admits a third at 100 ms;
    // then the turn goes round d0 -> d2 -> d1 -> d0 (list [d2, d1, d0], wrapping).
    expect(order.join(' ')).toBe('drive0 drive0 drive0 drive2 drive1 drive0 drive2 drive1 drive2 drive1 drive2 drive1');
  });

  const LIMITS: [keyof ThrottleLimits, 'r' | 'w' | 'rw', number, number][] = [
    ['iopsTotal', 'rw', 60, 512],
    ['iopsRead', 'r', 60, 512],
    ['iopsWrite', 'w', 60, 512],
    ['bpsTotal', 'rw', 60 * 1024, 1024],
    ['bpsRead', 'r', 60 * 1024, 1024],
    ['bpsWrite', 'w', 60 * 1024, 1024],
  ];
  for (const [limit, dirs, rate, size] of LIMITS) {
    for (const n of [1, 2, 3]) {
      it(`093 fairness: ${n} busy drive(s) under ${limit} each get ${Math.round(100 / n)}% ±10% of the group rate`, async () => {
        const { clock, drives } = await setup(n, { [limit]: rate, group: 'fair' });
        const seconds = 5;
        const unitsPerRequest = limit.startsWith('bps') ? size : 1;
        const perDrive = Math.ceil((2 * rate * seconds) / unitsPerRequest / n) + 10; // demand ≥ 2× the limit
        const done = drives.map(() => 0);
        const all: Promise<unknown>[] = [];
        drives.forEach((d, k) => {
          for (let i = 0; i < perDrive; i++) {
            const write = dirs === 'w' || (dirs === 'rw' && i % 2 === 1);
            const p = write ? d.write(0, new Uint8Array(size)) : d.read(0, size);
            all.push(
              p.then(() => {
                if (clock.now() < seconds * 1e9) done[k]++;
              }),
            );
          }
        });
        await clock.advanceTo(seconds * 1e9 - 1);
        const share = (rate * seconds) / unitsPerRequest / n;
        for (const got of done) {
          expect(got).toBeGreaterThanOrEqual(0.9 * share);
          expect(got).toBeLessThanOrEqual(1.1 * share);
        }
        await Promise.all(drives.map((d) => d.close()));
        await Promise.all(all);
      });
    }
  }

  it('burst rule: with iops max 7×rate for 4 s, the first 4 s see about 7×rate and the steady state about rate', async () => {
    const rate = 50;
    const { clock, drives } = await setup(1, { iopsTotal: rate, iopsTotalMax: 7 * rate, iopsTotalMaxLength: 4 });
    const times: number[] = [];
    const all = Array.from({ length: 3000 }, () => drives[0].read(0, 512).then(() => times.push(clock.now())));
    await clock.advanceTo(12e9);
    const inWindow = (a: number, b: number) => times.filter((t) => t >= a * 1e9 && t < b * 1e9).length;
    const burst = inWindow(0, 4);
    expect(burst).toBeGreaterThanOrEqual(0.9 * 7 * rate * 4);
    expect(burst).toBeLessThanOrEqual(1.1 * 7 * rate * 4);
    const steady = inWindow(6, 11);
    expect(steady).toBeGreaterThanOrEqual(0.9 * rate * 5);
    expect(steady).toBeLessThanOrEqual(1.1 * rate * 5);
    await drives[0].close();
    await Promise.all(all);
  });
});

describe('setLimits (block_set_io_throttle semantics, §3.10)', () => {
  it('M4: raising bps_rd at 0.5 s releases one read at once and the rest flow at the new rate', async () => {
    const { clock, drives } = await setup(1, { bpsRead: 4096 });
    const times: number[] = [];
    const all = Array.from({ length: 10 }, () => drives[0].read(0, 512).then(() => times.push(clock.now())));
    await clock.advanceTo(500e6);
    drives[0].setLimits({ bpsRead: 8192 });
    await clock.runUntilIdle();
    await Promise.all(all);
    const expected = [0, 24999999, 150e6, 275e6, 399999999, 500e6, 500e6, 525e6, 587.5e6, 650e6];
    for (const [i, t] of times.entries()) expect(Math.abs(t - expected[i]), `request ${i}`).toBeLessThanOrEqual(1000);
  });

  it('a drive without a group name is in a group named after the drive', async () => {
    const { drives, layer } = await setup(1, { iopsTotal: 5 });
    expect(drives[0].getLimits()).toEqual({ iopsTotal: 5, group: 'drive0' });
    expect(layer.throttleGroup('drive0')?.memberNames()).toEqual(['drive0']);
  });

  it('the last configuration wins for the whole group', async () => {
    const { drives } = await setup(2, { iopsTotal: 5, group: 'g' });
    drives[1].setLimits({ bpsRead: 1000 });
    expect(drives[0].getLimits()).toEqual({ bpsRead: 1000, group: 'g' });
  });

  it('giving another group moves the drive; the old implicit group disappears with its last member', async () => {
    const { drives, layer } = await setup(1, { iopsTotal: 5, group: 'a' });
    drives[0].setLimits({ iopsTotal: 7, group: 'b' });
    expect(drives[0].getLimits()).toEqual({ iopsTotal: 7, group: 'b' });
    expect(layer.throttleGroup('a')).toBeUndefined();
  });

  it('all-zero limits drain the queue and take the drive out of throttling', async () => {
    const { clock, drives, layer } = await setup(1, { bpsRead: 512 });
    const times: number[] = [];
    const all = Array.from({ length: 5 }, () => drives[0].read(0, 512).then(() => times.push(clock.now())));
    await clock.advanceNs(1);
    drives[0].setLimits({});
    await Promise.all(all);
    expect(times.every((t) => t <= 1)).toBe(true);
    expect(drives[0].getLimits()).toBeNull();
    expect(layer.throttleGroup('drive0')).toBeUndefined();
    expect(clock.pendingTimers).toBe(0);
  });

  it('joining an explicit group by name keeps its limits; an unknown group without limits is refused', async () => {
    const { drives, layer } = await setup(1, undefined);
    layer.createThrottleGroup('tenant', { iopsTotal: 100 });
    drives[0].setLimits({ group: 'tenant' });
    expect(drives[0].getLimits()).toEqual({ iopsTotal: 100, group: 'tenant' });
    expect(() => drives[0].setLimits({ group: 'nosuch' })).toThrow(/throttle group 'nosuch' does not exist/);
    expect(() => layer.deleteThrottleGroup('tenant')).toThrow(/in use by drive0/);
    drives[0].setLimits({ iopsTotal: 0 });
    layer.deleteThrottleGroup('tenant');
    expect(() => layer.createThrottleGroup('x', { iopsTotal: 1, bpsRead: -1 })).toThrow(BlockError);
  });

  it('invalid limits name the field and leave the drive as it was', async () => {
    const { drives } = await setup(1, { iopsTotal: 5 });
    expect(() => drives[0].setLimits({ iopsTotal: 5, iopsRead: 5 })).toThrow(/iopsTotal, iopsRead/);
    expect(() => drives[0].setLimits({ iops: 5 } as never)).toThrow(/iops: unknown option/);
    expect(drives[0].getLimits()).toEqual({ iopsTotal: 5, group: 'drive0' });
  });

  it('openDrive refuses invalid throttle options naming throttle.<field>', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    await expect(layer.openDrive({ driver: 'null', throttle: { iopsTotal: -1 } })).rejects.toThrow(/iopsTotal/);
    await expect(layer.openDrive({ driver: 'null', throttle: { iopsTotal: 'x' as never } })).rejects.toThrow(/^throttle\.iopsTotal: /);
    expect(layer.listDrives()).toHaveLength(0);
  });
});

describe('throttled requests', () => {
  it('flush and discard are not throttled; write-zeroes counts as a write', async () => {
    const { clock, drives } = await setup(1, { iopsTotal: 1 });
    const d = drives[0];
    const reads = [d.read(0, 512), d.read(0, 512)];
    const zero = d.writeZeroes(0, 4096).then(() => clock.now());
    await d.flush();
    await d.discard(0, 4096);
    expect(clock.now()).toBe(0);
    await clock.runUntilIdle();
    expect(await zero).toBeGreaterThan(0);
    await Promise.all(reads);
  });

  it('an aborted queued request rejects with ECANCELED and never reaches the driver', async () => {
    const { clock, drives } = await setup(1, { iopsWrite: 1 });
    const d = drives[0];
    const first = [d.write(0, new Uint8Array(512)), d.write(0, new Uint8Array(512))];
    const ac = new AbortController();
    const p = d.write(0, new Uint8Array(512), { signal: ac.signal });
    const later = d.write(0, new Uint8Array(512));
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'ECANCELED' });
    await clock.runUntilIdle();
    await later;
    await Promise.all(first);
    const s = d.stats();
    expect(s.wrOperations).toBe(3);
    expect(s.failedWrOperations).toBe(0);
  });

  it('emits throttled and unthrottled, and counts delays in stats().throttle', async () => {
    const { clock, drives } = await setup(1, { iopsRead: 10 });
    const d = drives[0];
    const events: string[] = [];
    d.on('throttled', (e) => events.push(`throttled ${e.direction}`));
    d.on('unthrottled', (e) => events.push(`unthrottled ${e.direction} ${e.delayedNs}`));
    const all = Array.from({ length: 4 }, () => d.read(0, 512));
    await clock.runUntilIdle();
    await Promise.all(all);
    expect(events).toEqual(['throttled read', 'unthrottled read 200000000']);
    expect(d.stats().throttle).toMatchObject({ group: 'drive0', delayedRequests: 2, totalDelayNs: 300e6, maxDelayNs: 200e6, queuedReads: 0 });
  });

  it('closing a drive with queued requests drains them: every request settles once', async () => {
    const { drives } = await setup(1, { iopsRead: 1 });
    let settled = 0;
    const all = Array.from({ length: 20 }, () => drives[0].read(0, 512).then(() => settled++));
    await drives[0].close();
    await Promise.all(all);
    expect(settled).toBe(20);
  });
});

describe('throttle filter node', () => {
  it('stacked filters apply a per-drive limit under a shared aggregate limit', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    layer.createThrottleGroup('all', { iopsRead: 10 });
    layer.createThrottleGroup('one', { iopsRead: 2 });
    const filtered = await layer.openDrive({
      driver: 'throttle',
      throttleGroup: 'one',
      file: { driver: 'throttle', throttleGroup: 'all', file: { driver: 'null', size: '1M' } },
    });
    const other = await layer.openDrive({ driver: 'throttle', throttleGroup: 'all', file: { driver: 'null', size: '1M' } });
    const t1: number[] = [];
    const t2: number[] = [];
    const all = [
      ...Array.from({ length: 4 }, () => filtered.read(0, 512).then(() => t1.push(clock.now()))),
      ...Array.from({ length: 6 }, () => other.read(0, 512).then(() => t2.push(clock.now()))),
    ];
    await clock.runUntilIdle();
    await Promise.all(all);
    // 'one' (2/s) lets the filtered drive's reads down at 0, 400, 900, 1400 ms; 'all' (10/s) is busy with
    // the other drive at 400 ms, so that read takes the next turn at 500 ms and 'all' serves both in turn.
    expect(t1.map((t) => Math.round(t / 1e6))).toEqual([0, 500, 900, 1400]);
    expect(t2.map((t) => Math.round(t / 1e6))).toEqual([0, 100, 200, 300, 400, 600]);
    await filtered.close();
    await other.close();
    expect(layer.throttleGroup('all')?.size).toBe(0);
  });

  it('a throttle node naming a missing group is refused', async () => {
    const layer = new BlockLayer();
    await expect(layer.openDrive({ driver: 'throttle', throttleGroup: 'nope', file: { driver: 'null' } })).rejects.toThrow(
      /throttleGroup: throttle group 'nope' does not exist/,
    );
  });
});
