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
import { validThrottleArb } from '../helpers/limits-arb.js';

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
      fc.property(validThrottleArb, (t) => {
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
