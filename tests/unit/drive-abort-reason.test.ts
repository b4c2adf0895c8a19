import { describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, ThrottleGroup, VirtualClock } from '../../src/index.js';
import { rejection } from '../helpers/rejection.js';

/** The ECANCELED a promise rejects with; fails the test for anything else. */
async function canceled(p: Promise<unknown>): Promise<BlockError> {
  const e = await rejection(p);
  expect(e).toBeInstanceOf(BlockError);
  expect(e).toMatchObject({ code: 'ECANCELED' });
  return e as BlockError;
}

const tick = () => new Promise((r) => setImmediate(r));

describe('an aborted request rejects with ECANCELED whose cause is the signal’s reason', () => {
  it('aborted before it starts: every operation, with a given reason and with the default one', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    const reason = new Error('user pressed stop');
    const ac = new AbortController();
    ac.abort(reason);
    const ops = [
      d.read(0, 512, { signal: ac.signal }),
      d.read(0, new Uint8Array(8), { signal: ac.signal }),
      d.write(0, new Uint8Array(8), { signal: ac.signal }),
      d.writeZeroes(0, 512, { signal: ac.signal }),
      d.discard(0, 512, { signal: ac.signal }),
      d.flush({ signal: ac.signal }),
    ];
    for (const p of ops) expect((await canceled(p)).cause).toBe(reason);
    // The default reason of abort() (an AbortError DOMException) is kept as well.
    const plain = new AbortController();
    plain.abort();
    const e = await canceled(d.read(0, 512, { signal: plain.signal }));
    expect(e.cause).toBe(plain.signal.reason);
    expect((e.cause as Error).name).toBe('AbortError');
    // A signal made by AbortSignal.abort(reason) (an already-aborted one) too; any value is a reason.
    expect((await canceled(d.read(0, 512, { signal: AbortSignal.abort('why') }))).cause).toBe('why');
    await layer.close();
  });

  it('on the slow path of the checks (a polyfilled signal object) as well', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    const signal = { aborted: true, reason: 'polyfill', addEventListener() {}, removeEventListener() {} } as unknown as AbortSignal;
    expect((await canceled(d.read(0, 512, { signal }))).cause).toBe('polyfill');
    await layer.close();
  });

  it('aborted while queued by the drive’s throttling', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'null', size: '1M', throttle: { iopsWrite: 1 } });
    const first = [d.write(0, new Uint8Array(512)), d.write(0, new Uint8Array(512))];
    const ac = new AbortController();
    const queued = d.write(0, new Uint8Array(512), { signal: ac.signal });
    const zeroes = d.writeZeroes(0, 512, { signal: ac.signal });
    expect(d.stats().throttle?.queuedWrites).toBeGreaterThanOrEqual(2);
    const reason = new Error('deadline');
    ac.abort(reason);
    const e = await canceled(queued);
    expect(e.cause).toBe(reason);
    expect(e.message).toMatch(/aborted while throttled/);
    expect((await canceled(zeroes)).cause).toBe(reason);
    await clock.runUntilIdle();
    await Promise.all(first);
    await layer.close();
  });

  it('aborted at the moment a drain admits it from the throttle queue', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'null', size: '1M', throttle: { iopsRead: 1 } });
    const first = [d.read(0, 512), d.read(0, 512)];
    const ac = new AbortController();
    let draining: Promise<void> | undefined;
    // This listener runs before the queue's own: the drain takes the request off the queue
    // after the signal aborted but before the queue heard of it.
    ac.signal.addEventListener('abort', () => {
      draining = d.drain();
    });
    const queued = d.read(0, 512, { signal: ac.signal });
    ac.abort('drained too late');
    const e = await canceled(queued);
    expect(e.cause).toBe('drained too late');
    expect(e.message).toMatch(/^read: request at offset 0 was aborted/);
    await draining;
    await Promise.all(first);
    expect(d.stats().inFlight).toBe(0);
    await layer.close();
  });

  it('aborted while held by a drain', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'null', size: '1M', latencyNs: 1_000_000 });
    const busy = d.read(0, 512);
    const draining = d.drain();
    const ac = new AbortController();
    const held = d.write(0, new Uint8Array(512), { signal: ac.signal });
    const reason = { why: 'shutdown' };
    ac.abort(reason);
    const e = await canceled(held);
    expect(e.cause).toBe(reason);
    await busy;
    await draining;
    await layer.close();
  });

  it('aborted while held by a drive paused by a stop error policy', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({
      driver: 'blkdebug',
      rules: [{ event: 'write', code: 'EIO', once: true }],
      file: { driver: 'memory', size: 1 << 20 },
      werror: 'stop',
    } as never);
    const first = d.write(0, new Uint8Array([1]));
    await tick();
    expect(d.isPaused).toBe(true);
    const ac = new AbortController();
    const held = d.write(0, new Uint8Array([2]), { signal: ac.signal });
    const reason = new Error('operator gave up');
    ac.abort(reason);
    expect((await canceled(held)).cause).toBe(reason);
    (d.node.info().injector as { clear(): void }).clear();
    d.resume();
    await first;
    await layer.close();
  });

  it('aborted while queued in a throttle queue used directly (ThrottledRequestQueue.admit)', async () => {
    const clock = new VirtualClock();
    const group = new ThrottleGroup('g', clock, true);
    group.setLimits({ iopsRead: 1 });
    const queue = group.join('m');
    expect(queue.admit(0, 512)).toBeUndefined();
    const ac = new AbortController();
    const waits = [queue.admit(0, 512, ac.signal), queue.admit(0, 512, ac.signal)].filter((w) => w !== undefined);
    expect(waits.length).toBeGreaterThan(0);
    ac.abort('no longer needed');
    for (const w of waits) expect((await canceled(w)).cause).toBe('no longer needed');
    group.leave(queue);
  });
});
