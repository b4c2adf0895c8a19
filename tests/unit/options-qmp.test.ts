import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BlockLayer,
  blockSetIoThrottle,
  fromQapiLimits,
  parseBlockSetIoThrottle,
  queryBlockThrottle,
  toBlockSetIoThrottle,
  toQapiLimits,
  toQueryBlockThrottle,
  VirtualClock,
} from '../../src/index.js';
import { parseThrottleGroupObject, toThrottleGroupObject } from '../../src/index.js';
import { fromConfig, type ThrottleLimits, validateLimits } from '../../src/throttle/limits.js';
import { anyLimitsArb, groupArb, normalize, wideThrottleArb } from '../helpers/limits-arb.js';

const base = { device: 'drive0', bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 };
const verdict = (args: Record<string, unknown>) => {
  try {
    parseBlockSetIoThrottle({ ...base, ...args });
    return 'ok';
  } catch (e) {
    return (e as Error).message;
  }
};

describe('QMP block_set_io_throttle', () => {
  it('the QMP-level validity vectors of the reference §5.2 give QEMU verdicts', () => {
    expect(verdict({ bps: 1, bps_rd: 1 })).toMatch(/^bps, bps_rd: bps\/iops\/max total values and read\/write values cannot be used at the same time$/);
    expect(verdict({ iops: 1, iops_wr: 1 })).toMatch(/cannot be used at the same time/);
    expect(verdict({ bps: 10, bps_max: 20, bps_rd_max: 20 })).toMatch(/^bps_max, bps_rd_max: .*same time/);
    expect(verdict({ bps: -1 })).toMatch(/^bps: bps\/iops\/max values must be within \[0, 1000000000000000\]$/);
    expect(verdict({ bps: 1e15 + 1 })).toMatch(/must be within/);
    expect(verdict({ bps: 1e15 })).toBe('ok');
    expect(verdict({ bps_max: 100 })).toMatch(/^bps_max, bps: bps_max\/iops_max require corresponding bps\/iops values$/);
    expect(verdict({ bps: 100, bps_max: 50 })).toMatch(/cannot be lower than bps\/iops$/);
    expect(verdict({ bps: 100, bps_max: 100 })).toBe('ok');
    expect(verdict({ bps: 100, bps_max_length: 2 })).toMatch(/^bps_max_length, bps_max: burst length set without burst rate$/);
    expect(verdict({ bps: 100, bps_max: 200, bps_max_length: 0 })).toMatch(/^bps_max_length: the burst length cannot be 0$/);
    expect(verdict({ iops: 1, iops_max: 3, iops_max_length: 333333333333334 })).toMatch(/burst length too high for this burst rate$/);
    expect(verdict({ iops: 1, iops_max: 2, iops_max_length: 5e14 })).toBe('ok');
    expect(verdict({ bps: 100, iops_size: 4096 })).toMatch(/^iops_size: iops size requires an iops value to be set$/);
    expect(verdict({ iops_rd: 100, iops_size: 4096 })).toBe('ok');
    expect(verdict({})).toBe('ok');
  });

  it('a negative burst length, a huge uint64 in QMP, fails as too high (QEMU 7.2 behaviour)', () => {
    expect(verdict({ bps: 10, bps_max: 20, bps_max_length: -1 })).toMatch(/burst length too high/);
  });

  it('refuses missing mandatory members, unknown members, wrong types and a missing device', () => {
    expect(() => parseBlockSetIoThrottle({ device: 'd', bps: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 })).toThrow("Parameter 'bps_rd' is missing");
    expect(() => parseBlockSetIoThrottle({ ...base, bogus: 1 })).toThrow("Parameter 'bogus' is unexpected");
    expect(() => parseBlockSetIoThrottle({ ...base, bps: '5' })).toThrow("Invalid parameter type for 'bps', expected: integer");
    const { device: _, ...noDevice } = base;
    expect(() => parseBlockSetIoThrottle(noDevice)).toThrow("Need exactly one of 'id' and 'device'");
  });

  it('gives setLimits options with the group', () => {
    expect(parseBlockSetIoThrottle({ ...base, iops: 100, iops_max: 2000, iops_max_length: 60, iops_size: 4096, group: 'gX' })).toEqual({
      device: 'drive0',
      throttle: { iopsTotal: 100, iopsTotalMax: 2000, iopsTotalMaxLength: 60, iopsSize: 4096, group: 'gX' },
    });
  });

  it("query-block fields match QEMU's verified example", () => {
    expect(toQueryBlockThrottle({ iopsTotal: 100, iopsTotalMax: 2000, iopsTotalMaxLength: 60, iopsSize: 4096 }, 'gX')).toEqual({
      bps: 0,
      bps_rd: 0,
      bps_wr: 0,
      iops: 100,
      iops_rd: 0,
      iops_wr: 0,
      iops_max: 2000,
      iops_max_length: 60,
      iops_size: 4096,
      group: 'gX',
    });
    expect(toQueryBlockThrottle({ bpsRead: 5, bpsReadMax: 10 }, 'g')).toEqual({ bps: 0, bps_rd: 5, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0, bps_rd_max: 10, bps_rd_max_length: 1, group: 'g' });
    expect(toQueryBlockThrottle(null, 'g')).toEqual({ bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 });
  });

  it('QAPI ThrottleLimits: all 19 members out, hyphen names in', () => {
    const q = toQapiLimits({ iopsTotal: 10, bpsRead: 100 });
    expect(Object.keys(q)).toHaveLength(19);
    expect(q).toMatchObject({ 'iops-total': 10, 'bps-read': 100, 'iops-total-max-length': 1, 'iops-size': 0 });
    expect(fromQapiLimits({ 'iops-total': 10, 'iops-total-max': 20, 'iops-total-max-length': 3 })).toEqual({ iopsTotal: 10, iopsTotalMax: 20, iopsTotalMaxLength: 3 });
    expect(() => fromQapiLimits({ 'iops-totl': 1 })).toThrow("Parameter 'iops-totl' is unexpected");
  });

  it('round-trips random valid limits through block_set_io_throttle arguments and QAPI limits', () => {
    fc.assert(
      fc.property(wideThrottleArb, (t) => {
        expect(parseBlockSetIoThrottle(toBlockSetIoThrottle(t, { device: 'd' })).throttle).toEqual(t);
        const { group: _, ...limits } = t;
        const back = fromQapiLimits(toQapiLimits(limits));
        expect(Object.fromEntries(Object.entries(back).filter(([k, v]) => v !== 0 && !(k.endsWith('Length') && v === 1)))).toEqual(
          Object.fromEntries(Object.entries(limits).filter(([k, v]) => !(k.endsWith('Length') && v === 1))),
        );
      }),
      { numRuns: 300 },
    );
  });
});

describe('applying block_set_io_throttle to a layer', () => {
  it('finds the drive by device or id, applies the limits, and query-block shows them', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const d = await layer.openDrive({ id: 'drive0', driver: 'null' });
    blockSetIoThrottle(layer, { ...base, iops: 100, iops_max: 2000, iops_max_length: 60, iops_size: 4096, group: 'gX' });
    expect(queryBlockThrottle(d)).toEqual({ bps: 0, bps_rd: 0, bps_wr: 0, iops: 100, iops_rd: 0, iops_wr: 0, iops_max: 2000, iops_max_length: 60, iops_size: 4096, group: 'gX' });
    const { device: _, ...byId } = base;
    blockSetIoThrottle(layer, { ...byId, id: 'drive0', bps_rd: 4096 });
    expect(d.getLimits()).toEqual({ bpsRead: 4096, group: 'gX' });
    // all zero: throttling off (the group argument is ignored), query-block drops the group
    blockSetIoThrottle(layer, { ...base, group: 'other' });
    expect(queryBlockThrottle(d)).toEqual({ bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 });
    expect(() => blockSetIoThrottle(layer, { ...base, device: 'nosuch', iops: 1 })).toThrow("Device 'nosuch' not found");
  });
});

const verdictOf = (fn: () => unknown) => {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return (e as Error).message;
  }
};

describe('QMP block_set_io_throttle, more', () => {
  it('each §5.2 QMP vector, spelled as in the reference, gets the named rule', () => {
    const vectors: [Record<string, unknown>, string][] = [
      [{ bps: 1, bps_rd: 1 }, 'bps, bps_rd: bps/iops/max total values and read/write values cannot be used at the same time'],
      [{ iops: 1, iops_wr: 1 }, 'iops, iops_wr: bps/iops/max total values and read/write values cannot be used at the same time'],
      [{ bps: 10, bps_max: 20, bps_rd_max: 20 }, 'bps_max, bps_rd_max: bps/iops/max total values and read/write values cannot be used at the same time'],
      [{ bps: -1 }, 'bps: bps/iops/max values must be within [0, 1000000000000000]'],
      [{ bps: 1e15 + 1 }, 'bps: bps/iops/max values must be within [0, 1000000000000000]'],
      [{ bps: 1e15 }, 'ok'],
      [{ bps_max: 100 }, 'bps_max, bps: bps_max/iops_max require corresponding bps/iops values'],
      [{ bps: 100, bps_max: 50 }, 'bps_max, bps: bps_max/iops_max cannot be lower than bps/iops'],
      [{ bps: 100, bps_max: 100 }, 'ok'],
      [{ bps: 100, bps_max_length: 2 }, 'bps_max_length, bps_max: burst length set without burst rate'],
      [{ bps: 100, bps_max: 200, bps_max_length: 0 }, 'bps_max_length: the burst length cannot be 0'],
      [{ iops: 1, iops_max: 3, iops_max_length: 333333333333334 }, 'iops_max_length, iops_max: burst length too high for this burst rate'],
      [{ iops: 1, iops_max: 2, iops_max_length: 5e14 }, 'ok'],
      [{ bps: 100, iops_size: 4096 }, 'iops_size: iops size requires an iops value to be set'],
      [{ iops_rd: 100, iops_size: 4096 }, 'ok'],
      [{}, 'ok'],
    ];
    for (const [args, expected] of vectors) expect(verdict(args)).toBe(expected);
  });

  it('burst lengths are uint64 in QMP: above UINT_MAX they reach the rate rules instead of a range error', () => {
    // 333333333333334 > UINT_MAX: ThrottleLimits (validateLimits) would give the UINT_MAX range error
    expect(() => validateLimits({ iopsTotal: 1, iopsTotalMax: 3, iopsTotalMaxLength: 333333333333334 })).toThrow(/range \[0, 4294967295\]/);
    expect(verdict({ iops: 1, iops_max: 2, iops_max_length: 5e14 })).toBe('ok');
    expect(parseBlockSetIoThrottle({ ...base, iops: 1, iops_max: 2, iops_max_length: 5e14 }).throttle).toEqual({ iopsTotal: 1, iopsTotalMax: 2, iopsTotalMaxLength: 5e14 });
    expect(verdict({ bps: 1, bps_max: 1, bps_max_length: 1e15 })).toBe('ok');
    expect(verdict({ bps: 1, bps_max: 1, bps_max_length: 1e15 + 1 })).toBe('bps_max_length, bps_max: burst length too high for this burst rate');
    expect(verdict({ bps: 1, bps_max: 1, bps_max_length: 2 ** 64 - 1 })).toBe('bps_max_length, bps_max: burst length too high for this burst rate');
    expect(verdict({ bps: 1, bps_max: 1, bps_max_length: 18446744073709551615n })).toBe('bps_max_length, bps_max: burst length too high for this burst rate');
    expect(verdict({ bps: 1, bps_max_length: -1 })).toBe('bps_max_length, bps_max: burst length set without burst rate');
  });

  it('integers beyond 2^53 (number or bigint) are still integers and fail the range rule; fractions and strings are type errors', () => {
    expect(verdict({ bps: 2 ** 60 })).toBe('bps: bps/iops/max values must be within [0, 1000000000000000]');
    expect(verdict({ iops_rd: 2n ** 63n - 1n })).toBe('iops_rd: bps/iops/max values must be within [0, 1000000000000000]');
    expect(verdict({ iops_rd: 5n })).toBe('ok');
    expect(verdict({ bps: 1.5 })).toBe("Invalid parameter type for 'bps', expected: integer");
    expect(verdict({ iops_size: null })).toBe("Invalid parameter type for 'iops_size', expected: integer");
    expect(verdict({ group: 5 })).toBe("Invalid parameter type for 'group', expected: string");
  });

  it('each of the six base limits is mandatory, reported by name; optional members may be absent or undefined', () => {
    for (const m of ['bps', 'bps_rd', 'bps_wr', 'iops', 'iops_rd', 'iops_wr']) {
      const { [m as keyof typeof base]: _, ...args } = base;
      expect(() => parseBlockSetIoThrottle(args)).toThrow(expect.objectContaining({ code: 'EINVAL', message: `Parameter '${m}' is missing`, field: m }));
    }
    expect(parseBlockSetIoThrottle({ ...base, group: undefined, iops_max: undefined })).toEqual({ device: 'drive0', throttle: {} });
  });

  it('exactly one of device and id: neither or both refused', () => {
    expect(() => parseBlockSetIoThrottle({ ...base, id: 'qdev0' })).toThrow("Need exactly one of 'id' and 'device'");
    const { device: _, ...byId } = base;
    expect(parseBlockSetIoThrottle({ ...byId, id: '/machine/peripheral/virtio0' })).toEqual({ id: '/machine/peripheral/virtio0', throttle: {} });
  });

  it('a negative iops_size is refused (QEMU would take it as 2^64-1; we do not copy the quirk)', () => {
    expect(verdict({ iops: 10, iops_size: -1 })).toBe('iops_size: must not be negative');
  });

  it('the drive is looked up before the limits are validated, as in QEMU', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    await layer.openDrive({ id: 'drive0', driver: 'null' });
    expect(() => blockSetIoThrottle(layer, { ...base, device: 'nosuch', bps: 1, bps_rd: 1 })).toThrow(expect.objectContaining({ code: 'ENOENT', message: "Device 'nosuch' not found" }));
    expect(() => blockSetIoThrottle(layer, { ...base, bps: 1, bps_rd: 1 })).toThrow(/cannot be used at the same time/);
    // member errors come first (QAPI unmarshalling precedes the lookup)
    const { bps_rd: _, ...missing } = base;
    expect(() => blockSetIoThrottle(layer, { ...missing, device: 'nosuch' })).toThrow("Parameter 'bps_rd' is missing");
  });
});

describe('query-block throttle fields', () => {
  it("the verified example: six base fields, iops_max with its length, iops_size and the group", () => {
    const q = toQueryBlockThrottle({ iopsTotal: 100, iopsTotalMax: 2000, iopsTotalMaxLength: 60, iopsSize: 4096 }, 'gX');
    expect(q).toStrictEqual({ iops: 100, iops_max: 2000, iops_max_length: 60, iops_size: 4096, group: 'gX', bps: 0, bps_rd: 0, bps_wr: 0, iops_rd: 0, iops_wr: 0 });
  });

  it('a *_max_length appears only with its non-zero *_max (default 1); zero *_max and iops_size are left out', () => {
    expect(toQueryBlockThrottle({ bpsWrite: 10, bpsWriteMax: 0, bpsWriteMaxLength: 1, iopsWrite: 3, iopsSize: 0 }, 'g')).toStrictEqual({
      bps: 0,
      bps_rd: 0,
      bps_wr: 10,
      iops: 0,
      iops_rd: 0,
      iops_wr: 3,
      group: 'g',
    });
    expect(toQueryBlockThrottle({ iopsWrite: 3, iopsWriteMax: 9 }, 'g')).toMatchObject({ iops_wr_max: 9, iops_wr_max_length: 1 });
  });

  it('the group appears only while throttling is enabled (some avg non-zero)', () => {
    expect(toQueryBlockThrottle({}, 'g')).toStrictEqual({ bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 });
    expect(toQueryBlockThrottle({ bpsTotal: 1 })).not.toHaveProperty('group');
    expect(toQueryBlockThrottle({ bpsTotal: 1 }, 'g').group).toBe('g');
  });

  it('query-block output fed back as block_set_io_throttle arguments gives the same limits and group', () => {
    fc.assert(
      fc.property(wideThrottleArb, groupArb, (t, g) => {
        const { group: _, ...limits } = t;
        const q = toQueryBlockThrottle(limits, g);
        expect(Object.keys(q).slice(0, 6)).toEqual(['bps', 'bps_rd', 'bps_wr', 'iops', 'iops_rd', 'iops_wr']);
        const { group, ...back } = parseBlockSetIoThrottle({ ...q, device: 'd' }).throttle;
        expect(group).toBe(g);
        expect(normalize(back)).toEqual(normalize(limits));
      }),
      { numRuns: 500 },
    );
  });
});

describe('QAPI ThrottleLimits and QOM throttle-group objects', () => {
  it('toQapiLimits gives all 19 hyphen names, lengths defaulting to 1 and the rest to 0', () => {
    const q = toQapiLimits({});
    expect(Object.keys(q).sort()).toEqual(
      [
        'bps-total', 'bps-total-max', 'bps-total-max-length', 'bps-read', 'bps-read-max', 'bps-read-max-length', 'bps-write', 'bps-write-max', 'bps-write-max-length',
        'iops-total', 'iops-total-max', 'iops-total-max-length', 'iops-read', 'iops-read-max', 'iops-read-max-length', 'iops-write', 'iops-write-max', 'iops-write-max-length',
        'iops-size',
      ].sort(),
    );
    for (const [k, v] of Object.entries(q)) expect(v).toBe(k.endsWith('-length') ? 1 : 0);
  });

  it('fromQapiLimits merges into current limits as a qom-set of limits does, and validates the result', () => {
    expect(fromQapiLimits({ 'iops-total-max': 50 }, { iopsTotal: 10 })).toEqual({ iopsTotal: 10, iopsTotalMax: 50 });
    expect(fromQapiLimits({ 'iops-total': 0 }, { iopsTotal: 10, bpsRead: 5 })).toEqual({ bpsRead: 5 });
    expect(() => fromQapiLimits({ 'iops-read': 1 }, { iopsTotal: 10 })).toThrow(/^iops-total, iops-read: .*same time$/);
    expect(() => fromQapiLimits({ 'bps-read-max-length': 4294967296 })).toThrow(/^bps-read-max-length: value must be in the range \[0, 4294967295\]$/);
    expect(() => fromQapiLimits({ 'bps-read': '1' })).toThrow("Invalid parameter type for 'bps-read', expected: integer");
  });

  it('throttle-group objects from -object strings with x- properties or limits.* keys, and from object-add arguments', () => {
    expect(parseThrottleGroupObject('throttle-group,id=tg0,x-iops-total=100,x-iops-total-max=200,x-iops-total-max-length=30,x-iops-size=4096')).toEqual({
      id: 'tg0',
      limits: { iopsTotal: 100, iopsTotalMax: 200, iopsTotalMaxLength: 30, iopsSize: 4096 },
    });
    expect(parseThrottleGroupObject('throttle-group,id=tg1,limits.bps-read=5,limits.bps-write=6')).toEqual({ id: 'tg1', limits: { bpsRead: 5, bpsWrite: 6 } });
    expect(parseThrottleGroupObject({ 'qom-type': 'throttle-group', id: 'tg2', limits: { 'iops-total': 10, 'bps-read': 100, 'iops-total-max-length': 1 } })).toEqual({
      id: 'tg2',
      limits: { iopsTotal: 10, bpsRead: 100 },
    });
    expect(parseThrottleGroupObject({ id: 'tg3' })).toEqual({ id: 'tg3', limits: {} });
  });

  it('throttle-group objects refuse negative x- values, long lengths, unknown properties, a missing id and mixing limits with x-', () => {
    expect(() => parseThrottleGroupObject('throttle-group,id=t,x-iops-total=-1')).toThrow('x-iops-total: Property values cannot be negative');
    expect(() => parseThrottleGroupObject('throttle-group,id=t,x-iops-total=1,x-iops-total-max=2,x-iops-total-max-length=4294967296')).toThrow(
      'x-iops-total-max-length: value must be in the range [0, 4294967295]',
    );
    expect(() => parseThrottleGroupObject('throttle-group,id=t,x-iops=1')).toThrow("Property 'throttle-group.x-iops' not found");
    expect(() => parseThrottleGroupObject('throttle-group,x-iops-total=1')).toThrow("Parameter 'id' is missing");
    expect(() => parseThrottleGroupObject('memory-backend-ram,id=m')).toThrow("qom-type: expected 'throttle-group', got 'memory-backend-ram'");
    expect(() => parseThrottleGroupObject({ id: 't', 'x-bps-total': 1, limits: { 'bps-total': 1 } })).toThrow(/either 'limits' or the x- properties/);
    expect(() => parseThrottleGroupObject('throttle-group,id=t,x-bps-total=1,x-bps-read=1')).toThrow(
      'x-bps-total, x-bps-read: bps/iops/max total values and read/write values cannot be used at the same time',
    );
  });
});

describe('QMP, QAPI and QOM round trips', () => {
  it('random valid limits over the whole range: block_set_io_throttle arguments and back', () => {
    fc.assert(
      fc.property(wideThrottleArb, fc.boolean(), (t, byId) => {
        const target = byId ? { id: 'qdev/x' } : { device: 'd' };
        expect(parseBlockSetIoThrottle(toBlockSetIoThrottle(t, target))).toEqual({ ...target, throttle: t });
      }),
      { numRuns: 500 },
    );
  });

  it('random valid limits: QAPI ThrottleLimits and back, and throttle-group object-add arguments and back, in normal form', () => {
    fc.assert(
      fc.property(wideThrottleArb, (t) => {
        const { group: _, ...limits } = t;
        expect(fromQapiLimits(toQapiLimits(limits))).toEqual(normalize(limits));
        expect(parseThrottleGroupObject(toThrottleGroupObject('tg', limits))).toEqual({ id: 'tg', limits: normalize(limits) });
        const x = Object.entries(limits).map(([k, v]) => `x-${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}=${v}`);
        expect(parseThrottleGroupObject(['throttle-group', 'id=tg', ...x].join(','))).toEqual({ id: 'tg', limits: normalize(limits) });
      }),
      { numRuns: 500 },
    );
  });

  it('any mix of limits gets the verdict validateLimits gives, through QMP arguments (lengths ≤ UINT_MAX)', () => {
    fc.assert(
      fc.property(anyLimitsArb, (limits: ThrottleLimits) => {
        const expected = verdictOf(() => fromConfig(validateLimits(limits))).replace(/^[^:]*: /, '');
        expect(verdictOf(() => parseBlockSetIoThrottle(toBlockSetIoThrottle(limits, { device: 'd' }))).replace(/^[^:]*: /, '')).toBe(expected);
        expect(verdictOf(() => fromQapiLimits(toQapiLimits(limits))).replace(/^[^:]*: /, '')).toBe(expected);
      }),
      { numRuns: 1000 },
    );
  });
});
