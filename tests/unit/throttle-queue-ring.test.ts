import { describe, expect, it } from 'vitest';
import { BlockLayer, VirtualClock } from '../../src/index.js';

/** The Drive's queued requests live in a ring of columns per direction: these pin what it must keep. */
describe('throttle queue ring (compact queued requests)', () => {
  it('across growth, wrap-around and aborts anywhere, every request settles once and the rest reach the driver in order', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'memory', size: 1 << 20, throttle: { iopsWrite: 10 } });
    const order: number[] = [];
    const outcome = new Map<number, string>();
    const aborters = new Map<number, AbortController>();
    const submit = (i: number) => {
      const ac = new AbortController();
      aborters.set(i, ac);
      d.write(i * 512, new Uint8Array(512).fill((i % 250) + 1), { signal: i % 3 === 0 ? ac.signal : undefined }).then(
        () => {
          expect(outcome.has(i)).toBe(false);
          outcome.set(i, 'ok');
          order.push(i);
        },
        (e: { code: string }) => {
          expect(outcome.has(i)).toBe(false);
          outcome.set(i, e.code);
        },
      );
    };
    for (let i = 0; i < 40; i++) submit(i);
    // Abort at the head, in the middle and at the tail of the queue.
    for (const i of [1 * 3, 5 * 3, 13 * 3]) aborters.get(i)!.abort();
    await clock.advance(2000); // about 20 admitted: the ring's head has moved on
    for (let i = 40; i < 300; i++) submit(i); // wraps around, then grows while wrapped
    for (const i of [27, 30, 150, 297]) aborters.get(i)!.abort();
    aborters.get(6)!.abort(); // admitted already: nothing happens
    await clock.runUntilIdle();
    await clock.advance(1);
    const aborted = [3, 15, 39, 27, 30, 150, 297];
    expect(outcome.size).toBe(300);
    for (const i of aborted) expect(outcome.get(i)).toBe('ECANCELED');
    expect(order).toEqual([...Array(300).keys()].filter((i) => !aborted.includes(i)));
    const disk = await d.read(0, 300 * 512);
    for (let i = 0; i < 300; i++) expect(disk[i * 512]).toBe(aborted.includes(i) ? 0 : (i % 250) + 1);
    expect(d.stats().throttle).toMatchObject({ queuedReads: 0, queuedWrites: 0 });
    expect(d.stats().inFlight).toBe(0);
    await layer.close();
  });

  it('after every queued request was aborted, new requests queue and go in order', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'memory', size: 1 << 20, throttle: { iopsRead: 1 } });
    const ac = new AbortController();
    const first = d.read(0, 512);
    const doomed = Array.from({ length: 100 }, () => d.read(0, 512, { signal: ac.signal }).catch((e: { code: string }) => e.code));
    expect(d.stats().throttle).toMatchObject({ queuedReads: 100 });
    ac.abort();
    expect(d.stats().throttle).toMatchObject({ queuedReads: 0 });
    // The group's own count of waiting requests (it spares walking the members) follows the aborts.
    expect([...layer.throttleGroup(d.getLimits()!.group)!.waiting]).toEqual([0, 0]);
    const order: number[] = [];
    const later = [1, 2, 3].map((i) => d.read(i * 512, 512).then(() => order.push(i)));
    expect(d.stats().throttle).toMatchObject({ queuedReads: 3 });
    await clock.runUntilIdle();
    await Promise.all([first, ...later]);
    expect(new Set(await Promise.all(doomed))).toEqual(new Set(['ECANCELED']));
    expect(order).toEqual([1, 2, 3]);
    await layer.close();
  });

  it('a queued write-zeroes keeps its length and a queued read its buffer', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'memory', size: 1 << 20, throttle: { iopsTotal: 1 } });
    const target = new Uint8Array(4096);
    const write = d.write(0, new Uint8Array(4096).fill(0xff));
    const zeroes = d.writeZeroes(1024, 1000);
    const read = d.read(0, target);
    expect(d.stats().throttle).toMatchObject({ queuedWrites: 1, queuedReads: 1 });
    await clock.runUntilIdle();
    await Promise.all([write, zeroes]);
    expect(await read).toBe(target);
    expect([target[1023], target[1024], target[2023], target[2024]]).toEqual([0xff, 0, 0, 0xff]);
    expect(d.stats()).toMatchObject({ wrOperations: 2, wrBytes: 4096 + 1000, rdOperations: 1 });
    await layer.close();
  });

  it('a request that waited in the queue and then failed under werror=stop is retried in its order of arrival', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({
      driver: 'blkdebug',
      rules: [{ event: 'write', code: 'EIO' }],
      file: { driver: 'memory', size: 1 << 20 },
      werror: 'stop',
      throttle: { iopsWrite: 1 },
    } as never);
    const injector = d.node.info().injector as { clear(): void };
    const read = d.read(4096, 512); // arrival 0 (reads are not limited)
    const a = d.write(0, new Uint8Array([0xaa])); // arrival 1: goes at once, fails, is parked
    const b = d.write(0, new Uint8Array([0xbb])); // arrival 2: queued, fails a second later, parked after a
    expect(d.stats().throttle).toMatchObject({ queuedWrites: 1 });
    await clock.advance(2000);
    expect(d.isPaused).toBe(true);
    injector.clear();
    d.resume();
    await clock.runUntilIdle();
    await Promise.all([read, a, b]);
    // Retried in arrival order: b (the later write) wins.
    expect((await d.read(0, 1))[0]).toBe(0xbb);
    await layer.close();
  });
});
