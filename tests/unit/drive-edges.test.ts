import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { BlockLayer, type Clock, type Drive, defineDriver, VirtualClock } from '../../src/index.js';

/** Calls `f` and returns its promise; a synchronous throw fails the test (entry points must reject, not throw). */
function call<T>(f: () => Promise<T>): Promise<T> {
  let p: Promise<T>;
  try {
    p = f();
  } catch (e) {
    throw new Error(`threw synchronously instead of returning a rejected promise: ${(e as Error).message}`);
  }
  expect(p).toBeInstanceOf(Promise);
  return p;
}

/** A protocol driver whose requests each take `latencyNs` on the clock; `failAt` piece offsets fail at once. Tracks requests in flight. */
function slowDriver(state: { active: number; issued: number[]; failAt: Set<number> }) {
  return defineDriver({
    name: 'slow',
    capabilities: { kind: 'protocol' },
    schema: z.object({ latencyNs: z.number().default(1_000_000), maxTransfer: z.number().default(0) }).strict(),
    async open({ options, clock }: { options: { latencyNs: number; maxTransfer: number }; clock: Clock }) {
      const io = (offset: number) => {
        state.issued.push(offset);
        if (state.failAt.has(offset)) return Promise.reject(Object.assign(new Error('injected'), { code: 'EIO' }));
        state.active++;
        return new Promise<void>((resolve) =>
          clock.setTimer(clock.now() + options.latencyNs, () => {
            state.active--;
            resolve();
          }),
        );
      };
      return {
        alignment: 1,
        maxTransfer: options.maxTransfer,
        length: () => 1 << 20,
        read: (offset: number) => io(offset),
        write: (offset: number) => io(offset),
        flush: () => Promise.resolve(),
        discard: () => Promise.resolve(),
        blockStatus: async (offset: number, length: number) => ({ offset, length, data: true, zero: false, allocated: true, depth: 0 }),
        close: async () => {},
      };
    },
  });
}

describe('Drive entry points refuse bad input with a rejected promise and count nothing', () => {
  it('a read longer than the largest buffer (over 4 GiB) is refused, nothing stays in flight, drain and close finish', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'null', size: '8G' });
    await expect(call(() => d.read(0, 5 * 2 ** 30))).rejects.toMatchObject({ code: 'EINVAL', field: 'length' });
    expect(d.stats().inFlight).toBe(0);
    expect(d.stats().invalidRdOperations).toBe(1);
    await d.drain();
    await d.close();
  });

  it('blockStatus and blockStatusMap on a closed drive reject instead of throwing', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    await d.close();
    await expect(call(() => d.blockStatus(0, 512))).rejects.toMatchObject({ code: 'ECLOSED' });
    await expect(call(() => d.blockStatusMap())).rejects.toMatchObject({ code: 'ECLOSED' });
  });

  it('a Float64Array write is refused with EINVAL (it would store truncated numbers), nothing is written', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    await expect(call(() => d.write(0, new Float64Array([1.5, 2.5]) as unknown as Uint8Array))).rejects.toMatchObject({
      code: 'EINVAL',
      field: 'data',
    });
    expect([...(await d.read(0, 16))]).toEqual(new Array(16).fill(0));
    expect(d.stats().invalidWrOperations).toBe(1);
    expect(d.stats().failedWrOperations).toBe(0);
    await layer.close();
  });

  it('a string read target is EINVAL, counted as invalid and not as a device error', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    const errors: unknown[] = [];
    d.on('io-error', (e) => errors.push(e));
    await expect(call(() => d.read(0, 'abcd' as unknown as Uint8Array))).rejects.toMatchObject({ code: 'EINVAL', field: 'target' });
    const s = d.stats();
    expect([s.invalidRdOperations, s.failedRdOperations, s.inFlight]).toEqual([1, 0, 0]);
    expect(errors).toEqual([]);
    await layer.close();
  });

  it('DataView and ArrayBuffer are read and written by their bytes', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    const backing = new ArrayBuffer(16);
    const view = new DataView(backing, 4, 8);
    view.setFloat64(0, Math.PI);
    await d.write(100, view);
    const out = new ArrayBuffer(8);
    const got = await d.read(100, out);
    expect(got.buffer).toBe(out);
    expect(new DataView(out).getFloat64(0)).toBe(Math.PI);
    await d.write(200, new Uint8Array([9, 8, 7]).buffer);
    expect([...(await d.read(200, 3))]).toEqual([9, 8, 7]);
    await layer.close();
  });

  it('a signal that is not an AbortSignal is refused before it takes an in-flight slot', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'memory', size: 4096, throttle: { iopsTotal: 1 } });
    await d.read(0, 512); // empties the bucket: the next read would queue and use its signal
    const bogus = { aborted: false } as unknown as AbortSignal;
    await expect(call(() => d.read(0, 512, { signal: bogus }))).rejects.toMatchObject({ code: 'EINVAL', field: 'signal' });
    expect(d.stats().inFlight).toBe(0);
    await d.drain(); // resolves only when nothing is counted in flight
    await d.close();
  });
});

describe('BlockNode entry points reject instead of throwing', () => {
  it('out-of-range, wrong buffer type, read-only and closed requests come back as rejected promises', async () => {
    const layer = new BlockLayer();
    const node = await layer.openNode({ driver: 'memory', size: 512 });
    await expect(call(() => node.read(-1, new Uint8Array(1)))).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(call(() => node.write(0, 'x' as unknown as Uint8Array))).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(call(() => node.writeZeroes(500, 100))).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(call(() => node.discard(0, Number.NaN))).rejects.toMatchObject({ code: 'EINVAL' });
    const ro = await layer.openNode({ driver: 'memory', size: 512, readOnly: true });
    await expect(call(() => ro.write(0, new Uint8Array(1)))).rejects.toMatchObject({ code: 'EROFS' });
    await node.unref();
    await expect(call(() => node.flush())).rejects.toMatchObject({ code: 'ECLOSED' });
    await expect(call(() => node.read(0, new Uint8Array(1)))).rejects.toMatchObject({ code: 'ECLOSED' });
    await ro.unref();
    await layer.close();
  });
});

describe('drained sections (QEMU bdrv_drained_begin/end)', () => {
  it('drain finishes while callers keep submitting: new requests wait, then go, none is lost', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'null', size: '1M', latencyNs: 1_000_000 });
    let stop = false;
    let issued = 0;
    let settled = 0;
    const worker = async () => {
      while (!stop) {
        issued++;
        await d.read(0, 512);
        settled++;
      }
    };
    const workers = Array.from({ length: 4 }, worker);
    await clock.advance(0.5);
    let drained = false;
    const draining = d.drain().then(() => (drained = true));
    await clock.advance(1); // the four requests in flight complete; the ones issued after them are held
    expect(drained).toBe(true);
    await draining;
    expect(issued - settled).toBe(4); // the held ones were released after the drain, not lost
    stop = true;
    await clock.advance(2);
    await Promise.all(workers);
    expect(settled).toBe(issued);
    await layer.close();
  });

  it('requests held by a drain go in their order of arrival', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    const draining = d.drain();
    const writes = [1, 2, 3].map((v) => d.write(0, new Uint8Array([v])));
    await draining;
    await Promise.all(writes);
    expect((await d.read(0, 1))[0]).toBe(3);
    await layer.close();
  });
});

describe('split requests', () => {
  it('a request split into pieces settles only after every issued piece, and no piece is issued after the first failure', async () => {
    const clock = new VirtualClock();
    const state = { active: 0, issued: [] as number[], failAt: new Set([4096]) };
    const layer = new BlockLayer({ clock, drivers: [slowDriver(state)] });
    const d = await layer.openDrive({ driver: 'slow', maxTransfer: 4096 });
    let activeAtSettle = -1;
    const p = d.write(0, new Uint8Array(16 * 4096)).catch((e) => {
      activeAtSettle = state.active;
      return e;
    });
    await clock.runUntilIdle();
    expect(await p).toMatchObject({ code: 'EIO' });
    expect(activeAtSettle).toBe(0);
    expect(state.issued.length).toBeLessThan(16);
    await layer.close();
  });
});

describe('BlockLayer closed state', () => {
  it('a drive opened while layer.close() runs is closed with it and releases its lock; later opens fail with ECLOSED', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-layer-close-'));
    const file = path.join(dir, 'disk.img');
    fs.writeFileSync(file, Buffer.alloc(65536));
    const layer = new BlockLayer();
    const opening = layer.openDrive({ driver: 'file', filename: file });
    const closing = layer.close();
    await expect(opening).rejects.toMatchObject({ code: 'ECLOSED' });
    await closing;
    expect(layer.listDrives()).toHaveLength(0);
    await expect(call(() => layer.openDrive({ driver: 'memory', size: 512 }))).rejects.toMatchObject({ code: 'ECLOSED' });
    expect(() => layer.createThrottleGroup('g')).toThrow(/closed/);
    // The write lock is free again: another layer can open the file read-write.
    const other = new BlockLayer();
    const d = await other.openDrive({ driver: 'file', filename: file });
    await other.close();
    expect(d.closed).toBe(true);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

/** Every Drive method that takes a range, with the range given as (offset, length). */
const RANGE_METHODS: readonly [string, (d: Drive, offset: number, length: number) => Promise<unknown>][] = [
  ['read(offset, length)', (d, o, l) => d.read(o, l)],
  ['read(offset, buffer)', (d, o) => d.read(o, new Uint8Array(512))],
  ['write', (d, o) => d.write(o, new Uint8Array(512))],
  ['writeZeroes', (d, o, l) => d.writeZeroes(o, l)],
  ['discard', (d, o, l) => d.discard(o, l)],
  ['blockStatus', (d, o, l) => d.blockStatus(o, l)],
  ['blockStatusMap', (d, o, l) => d.blockStatusMap(o, l)],
];
/** Methods whose length is a number the caller gives (the others take it from a buffer). */
const TAKES_LENGTH = new Set(['read(offset, length)', 'writeZeroes', 'discard', 'blockStatus', 'blockStatusMap']);
const BAD_NUMBERS: readonly [string, number, string][] = [
  ['-5', -5, '-5'],
  ['-1', -1, '-1'],
  ['NaN', Number.NaN, 'NaN'],
  ['0.5', 0.5, '0.5'],
  ['4096.5', 4096.5, '4096.5'],
  ['Infinity', Number.POSITIVE_INFINITY, 'Infinity'],
  ['-Infinity', Number.NEGATIVE_INFINITY, '-Infinity'],
  ['2^53', 2 ** 53, '9007199254740992'],
  ['2^63', 2 ** 63, '9223372036854775808'],
  ['-2^53', -(2 ** 53), '-9007199254740992'],
];

/** What a call settled with: its rejection, or a failure if it threw or resolved. */
async function rejection(f: () => Promise<unknown>): Promise<Record<string, unknown>> {
  let p: Promise<unknown>;
  try {
    p = f();
  } catch (e) {
    return { threw: String(e) };
  }
  return p.then(
    (v) => ({ resolved: JSON.stringify(v) }),
    (e: unknown) => e as Record<string, unknown>,
  );
}

describe('every range argument of every Drive method is checked by the one validator', () => {
  const cases = RANGE_METHODS.flatMap(([method, call]) => [
    ...BAD_NUMBERS.map(([label, value, text]) => ({ method, call, field: 'offset', label, value, text })),
    ...(TAKES_LENGTH.has(method) ? BAD_NUMBERS.map(([label, value, text]) => ({ method, call, field: 'length', label, value, text })) : []),
  ]);

  it.each(cases)('$method with $field $label: rejected EINVAL naming $field and the value as given', async ({ call, field, value, text }) => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 1 << 20 });
    const e = await rejection(() => (field === 'offset' ? call(d, value, 512) : call(d, 0, value)));
    expect(e).toBeInstanceOf(Error);
    expect(e).toMatchObject({ name: 'BlockError', code: 'EINVAL', field });
    expect(e.message).toContain(`${field} ${text} `);
    expect(d.stats().inFlight).toBe(0);
    await d.close();
  });

  it('an offset of 2**63 is shown with all its digits by the drive and by its node (not 9223372036854776000 or 2^53-1)', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 1 << 20 });
    await expect(d.read(2 ** 63, 512)).rejects.toThrow('read: offset 9223372036854775808 must be a non-negative safe integer');
    await expect(d.node.read(2 ** 63, new Uint8Array(512))).rejects.toThrow('read: offset 9223372036854775808 and length 512 must be non-negative safe integers');
    await expect(d.node.writeZeroes(0, 2 ** 64)).rejects.toThrow('offset 0 and length 18446744073709551616 must');
    await d.close();
  });

  it('blockStatusMap(0, -5) and blockStatusMap(-5) are refused, not an empty map', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 1 << 20 });
    await expect(call(() => d.blockStatusMap(0, -5))).rejects.toMatchObject({ code: 'EINVAL', field: 'length' });
    await expect(call(() => d.blockStatusMap(-5))).rejects.toMatchObject({ code: 'EINVAL', field: 'offset' });
    await expect(call(() => d.node.blockStatusMap(0, -5))).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(call(() => d.blockStatusMap(1 << 20, 1))).rejects.toMatchObject({ code: 'EINVAL', field: 'length' });
    await expect(call(() => d.blockStatusMap((1 << 20) + 1, 0))).rejects.toMatchObject({ code: 'EINVAL', field: 'offset' });
    expect(await d.blockStatusMap(1 << 20, 0)).toEqual([]);
    await d.close();
  });

  it('property: any number that is not a non-negative safe integer is refused by every method, as offset or as length', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 1 << 20 });
    const bad = fc.oneof(
      fc.double().filter((x) => !(Number.isSafeInteger(x) && x >= 0)),
      fc.integer({ max: -1 }),
      fc.double({ min: 2 ** 53, noNaN: true }),
    );
    await fc.assert(
      fc.asyncProperty(bad, fc.constantFrom(...RANGE_METHODS), fc.boolean(), async (value, [method, call], asLength) => {
        const field = asLength && TAKES_LENGTH.has(method) ? 'length' : 'offset';
        const e = await rejection(() => (field === 'offset' ? call(d, value, 512) : call(d, 0, value)));
        expect(e).toMatchObject({ name: 'BlockError', code: 'EINVAL', field });
      }),
      { numRuns: 300 },
    );
    expect(d.stats().inFlight).toBe(0);
    await d.close();
  });
});
