import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { BlockLayer, defineDriver, type IoErrorEvent, VirtualClock } from '../../src/index.js';

/** A driver whose reads and writes throw synchronously (instead of returning a rejected promise) while `broken.on`. */
function throwingDriver(broken: { on: boolean }) {
  return defineDriver({
    name: 'throwing',
    capabilities: { kind: 'protocol' },
    schema: z.object({}).strict(),
    async open() {
      const fail = () => {
        throw Object.assign(new Error('device gone'), { code: 'EIO' });
      };
      return {
        alignment: 1,
        length: () => 1 << 20,
        read(_offset: number, buffer: Uint8Array) {
          if (broken.on) fail();
          buffer.fill(7);
          return Promise.resolve();
        },
        write() {
          if (broken.on) fail();
          return Promise.resolve();
        },
        flush: () => Promise.resolve(),
        discard: () => Promise.resolve(),
        blockStatus: async (offset: number, length: number) => ({ offset, length, data: true, zero: false, allocated: true, depth: 0 }),
        close: async () => {},
      };
    },
  });
}

describe('Drive request path', () => {
  it('a driver that throws synchronously fails the request like a rejection: rejected promise, io-error, failed count', async () => {
    const layer = new BlockLayer();
    const broken = { on: true };
    layer.registerDriver(throwingDriver(broken));
    const d = await layer.openDrive({ driver: 'throwing' });
    const events: IoErrorEvent[] = [];
    d.on('io-error', (e) => events.push(e));
    let p!: Promise<unknown>;
    expect(() => {
      p = d.read(4096, 512);
    }).not.toThrow();
    await expect(p).rejects.toMatchObject({ code: 'EIO', offset: 4096 });
    await expect(d.write(0, new Uint8Array(8))).rejects.toMatchObject({ code: 'EIO', offset: 0 });
    expect(events.map((e) => [e.operation, e.action])).toEqual([
      ['read', 'report'],
      ['write', 'report'],
    ]);
    expect(d.stats()).toMatchObject({ failedRdOperations: 1, failedWrOperations: 1, rdOperations: 0, inFlight: 0 });
    broken.on = false;
    expect((await d.read(0, 4))[0]).toBe(7);
    await layer.close();
  });

  it('error policies apply to a synchronous throw: ignore completes the read with its buffer, stop parks it until resume', async () => {
    const layer = new BlockLayer();
    const broken = { on: true };
    layer.registerDriver(throwingDriver(broken));
    const ignoring = await layer.openDrive({ driver: 'throwing', rerror: 'ignore' });
    const target = new Uint8Array(16);
    expect(await ignoring.read(0, target)).toBe(target);
    expect(ignoring.stats()).toMatchObject({ rdOperations: 1, failedRdOperations: 0, inFlight: 0 });

    const stopping = await layer.openDrive({ driver: 'throwing', werror: 'stop' });
    let settled = false;
    const w = stopping.write(0, new Uint8Array(4)).then(() => {
      settled = true;
    });
    await new Promise((r) => setImmediate(r));
    expect(stopping.isPaused).toBe(true);
    expect(settled).toBe(false);
    broken.on = false;
    stopping.resume();
    await w;
    expect(stopping.stats()).toMatchObject({ wrOperations: 1, failedWrOperations: 0, inFlight: 0 });
    await layer.close();
  });

  it('a request that waited in the throttle queue fails, completes (ignore) or parks (stop) like a direct one when its driver throws', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const broken = { on: false };
    layer.registerDriver(throwingDriver(broken));
    // iops 1 with no burst: the first request goes, each later one waits a second in the queue.
    const throttle = { iopsTotal: 1 };
    const reporting = await layer.openDrive({ driver: 'throwing', throttle });
    const ignoring = await layer.openDrive({ driver: 'throwing', rerror: 'ignore', throttle });
    const stopping = await layer.openDrive({ driver: 'throwing', werror: 'stop', throttle });
    const events: IoErrorEvent[] = [];
    for (const d of [reporting, ignoring, stopping]) d.on('io-error', (e) => events.push(e));
    for (const d of [reporting, ignoring, stopping]) await d.read(0, 4);
    broken.on = true;
    const failing = reporting.read(512, 4);
    const ignored = new Uint8Array(4);
    const completing = ignoring.read(1024, ignored);
    let written = false;
    const parked = stopping.write(0, new Uint8Array(4)).then(() => {
      written = true;
    });
    for (const d of [reporting, ignoring, stopping]) expect(d.stats().throttle).toMatchObject({ queuedReads: d === stopping ? 0 : 1, queuedWrites: d === stopping ? 1 : 0 });
    const failed = expect(failing).rejects.toMatchObject({ code: 'EIO', offset: 512 });
    await clock.advance(1000);
    await failed;
    expect(await completing).toBe(ignored);
    expect(stopping.isPaused).toBe(true);
    expect(written).toBe(false);
    expect(events.map((e) => [e.device, e.operation, e.action])).toEqual([
      [reporting.id, 'read', 'report'],
      [ignoring.id, 'read', 'ignore'],
      [stopping.id, 'write', 'stop'],
    ]);
    expect(reporting.stats()).toMatchObject({ failedRdOperations: 1, inFlight: 0 });
    expect(ignoring.stats()).toMatchObject({ rdOperations: 2, failedRdOperations: 0, inFlight: 0 });
    broken.on = false;
    stopping.resume();
    await parked;
    expect(stopping.stats()).toMatchObject({ wrOperations: 1, failedWrOperations: 0, inFlight: 0 });
    await layer.close();
  });

  it('requests let go from the throttle queue at once (limits removed, drain, group move) settle before a request that arrives right after', async () => {
    for (const release of ['remove limits', 'drain', 'move'] as const) {
      const clock = new VirtualClock();
      const layer = new BlockLayer({ clock });
      const d = await layer.openDrive({ driver: 'null', size: '1M', throttle: { iopsTotal: 1 } });
      const order: string[] = [];
      const track = (name: string, p: Promise<unknown>) => p.then(() => order.push(name));
      const all: Promise<unknown>[] = [track('first', d.read(0, 4))];
      for (const q of ['q1', 'q2', 'q3']) all.push(track(q, d.read(0, 4)));
      expect(d.stats().throttle).toMatchObject({ queuedReads: 3 });
      if (release === 'remove limits') d.setLimits({});
      else if (release === 'drain') all.push(d.drain());
      else d.setLimits({ iopsTotal: 1e9, group: 'elsewhere' });
      all.push(track('new', d.read(0, 4)));
      // A request that arrives during a drain is held, and throttled again once it ends.
      await clock.runUntilIdle();
      await Promise.all(all);
      expect(order, release).toEqual(['first', 'q1', 'q2', 'q3', 'new']);
      await layer.close();
    }
  });

  it('many requests at once, beyond what a drive keeps for reuse, each settle with their own buffer, twice over', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'null', size: '1M', readZeroes: true });
    for (let wave = 0; wave < 2; wave++) {
      const buffers = Array.from({ length: 600 }, () => new Uint8Array(8).fill(1));
      const reads = buffers.map((b, i) => d.read(i * 8, b));
      const writes = buffers.map((b, i) => d.write(i * 8, b));
      expect(d.stats().inFlight).toBe(1200);
      const got = await Promise.all(reads);
      got.forEach((b, i) => {
        expect(b).toBe(buffers[i]);
      });
      expect(await Promise.all(writes)).toEqual(new Array(600).fill(undefined));
    }
    expect(d.stats()).toMatchObject({ rdOperations: 1200, wrOperations: 1200, rdBytes: 9600, inFlight: 0 });
    await layer.close();
  });

  it('a request settles in the same microtask as an async function awaiting the node would (no extra promise layer)', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'null', size: '1M' });
    const order: string[] = [];
    const buf = new Uint8Array(4);
    void d.read(0, buf).then(() => order.push('drive'));
    void (async () => {
      await Promise.resolve();
    })().then(() => order.push('async'));
    void Promise.resolve()
      .then(() => order.push('tick 1'))
      .then(() => order.push('tick 2'))
      .then(() => order.push('tick 3'));
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual(['tick 1', 'drive', 'async', 'tick 2', 'tick 3']);
    await layer.close();
  });

  it('a node refuses requests on the fast path as on the general one: closed, out of range, read-only', async () => {
    const layer = new BlockLayer();
    const ro = await layer.openNode({ driver: 'null', size: 4096, readOnly: true });
    await expect(ro.read(4000, new Uint8Array(200))).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(ro.read(-1, new Uint8Array(1))).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(ro.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'EROFS' });
    await ro.unref();
    await expect(ro.read(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'ECLOSED' });
    const rw = await layer.openNode({ driver: 'null', size: 4096 });
    await expect(rw.write(4090, new Uint8Array(10))).rejects.toMatchObject({ code: 'EINVAL' });
    await rw.write(4086, new Uint8Array(10));
    await rw.unref();
    await layer.close();
  });
});
