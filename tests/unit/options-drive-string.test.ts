import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { driveStringToOptions, parseDriveString, splitQemuOpts, toDriveString } from '../../src/index.js';
import { validateLimits } from '../../src/throttle/limits.js';
import { anyLimitsArb, wideThrottleArb } from '../helpers/limits-arb.js';
import { toQapiName, toQmpName } from '../../src/options/throttle-names.js';
import { withAio } from '../../src/options/drive-string.js';

describe('-drive option strings', () => {
  it('parses the example of the issue with legacy and throttling.* names', () => {
    const p = parseDriveString('file=a.qcow2,format=qcow2,iops=100,bps_rd=1048576,throttling.iops-total-max=2000,group=g1');
    expect(p).toEqual({
      filename: 'a.qcow2',
      format: 'qcow2',
      throttle: { iopsTotal: 100, bpsRead: 1048576, iopsTotalMax: 2000, group: 'g1' },
    });
  });

  it('a doubled comma is a comma inside a value; a bare key means on', () => {
    expect(splitQemuOpts('file=a,,b.img,readonly,id=x')).toEqual([
      ['file', 'a,b.img'],
      ['readonly', 'on'],
      ['id', 'x'],
    ]);
    expect(parseDriveString('file=my,,disk.img,readonly')).toEqual({ filename: 'my,disk.img', readOnly: true });
  });

  it('builds drive options with the file under its format (raw by default)', () => {
    expect(driveStringToOptions('file=/x.img,id=d0,readonly=on,iops_rd=50')).toEqual({
      id: 'd0',
      driver: 'raw',
      file: { driver: 'file', filename: '/x.img' },
      readOnly: true,
      throttle: { iopsRead: 50 },
    });
    expect(() => driveStringToOptions('format=raw')).toThrow(/^file: required/);
  });

  it("refuses a parameter given under both spellings with QEMU's alias message", () => {
    expect(() => parseDriveString('file=x,iops=1,throttling.iops-total=2')).toThrow(
      "'throttling.iops-total' and its alias 'iops' can't be used at the same time",
    );
    expect(() => parseDriveString('file=x,throttling.group=a,group=b')).toThrow(
      "'throttling.group' and its alias 'group' can't be used at the same time",
    );
    expect(() => parseDriveString('file=x,bps_rd_max=1,throttling.bps-read-max=1')).toThrow(/alias 'bps_rd_max'/);
  });

  it('burst lengths have no legacy name; unknown options are refused by name', () => {
    expect(() => parseDriveString('file=x,bps_max_length=3')).toThrow("Invalid parameter 'bps_max_length'");
    expect(() => parseDriveString('file=x,throttling.bps-total-max-length=3,throttling.bps-total=1,throttling.bps-total-max=2')).not.toThrow();
    expect(() => parseDriveString('file=x,frobnicate=1')).toThrow("Invalid parameter 'frobnicate'");
  });

  it("QEMU's validity rules apply and name the user's spelling", () => {
    expect(() => parseDriveString('file=x,bps=1,bps_rd=1')).toThrow(/^bps, bps_rd: bps\/iops\/max total values and read\/write values cannot be used at the same time/);
    expect(() => parseDriveString('file=x,throttling.bps-total=100,throttling.bps-total-max=50')).toThrow(
      /^throttling\.bps-total-max, throttling\.bps-total: bps_max\/iops_max cannot be lower than bps\/iops/,
    );
    expect(() => parseDriveString('file=x,bps=100,iops_size=4096')).toThrow(/^iops_size: iops size requires an iops value/);
    expect(() => parseDriveString('file=x,throttling.iops-total=1,throttling.iops-total-max=2,throttling.iops-total-max-length=4294967296')).toThrow(
      /^throttling\.iops-total-max-length: value must be in the range \[0, 4294967295\]/,
    );
    expect(() => parseDriveString('file=x,iops=-1')).toThrow(/^Parameter 'iops' expects a non-negative number/);
    expect(() => parseDriveString('file=x,iops=0x10')).not.toThrow();
  });

  it('accepts harmless -drive keys and refuses what cannot be honoured with ENOTSUP', () => {
    expect(parseDriveString('file=x,if=virtio,cache=none,aio=native,discard=unmap,media=disk,werror=report')).toEqual({ filename: 'x', werror: 'report' });
    expect(() => parseDriveString('file=x,snapshot=on')).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
    expect(() => parseDriveString('file=x,media=cdrom')).toThrow(/media=cdrom is not supported/);
    expect(() => parseDriveString('file=x,readonly=maybe')).toThrow("Parameter 'readonly' expects 'on' or 'off'");
  });

  it('round-trips random valid limits through a -drive string', () => {
    fc.assert(
      fc.property(wideThrottleArb, (t) => {
        expect(parseDriveString(`file=x,${toDriveString(t)}`).throttle).toEqual(t);
      }),
      { numRuns: 300 },
    );
  });

  it('parses the full example of the brief into drive options (legacy and throttling.* names, group, id, readonly, if=none)', () => {
    const str = 'file=a.qcow2,format=qcow2,iops=100,bps_rd=1048576,throttling.iops-total-max=2000,group=g1,id=d0,readonly=on,if=none';
    expect(parseDriveString(str)).toEqual({
      id: 'd0',
      filename: 'a.qcow2',
      format: 'qcow2',
      readOnly: true,
      throttle: { iopsTotal: 100, bpsRead: 1048576, iopsTotalMax: 2000, group: 'g1' },
    });
    expect(driveStringToOptions(str)).toEqual({
      id: 'd0',
      driver: 'qcow2',
      file: { driver: 'file', filename: 'a.qcow2' },
      readOnly: true,
      throttle: { iopsTotal: 100, bpsRead: 1048576, iopsTotalMax: 2000, group: 'g1' },
    });
    expect(driveStringToOptions('file=b.img', { defaultFormat: 'qcow2' }).driver).toBe('qcow2');
  });

  it('a doubled comma escapes commas in any value, including the group and at the end of a value', () => {
    expect(parseDriveString('file=a,,,,b,,,id=x,,y,group=g,,1,iops=5')).toEqual({ filename: 'a,,b,', id: 'x,y', throttle: { iopsTotal: 5, group: 'g,1' } });
    expect(splitQemuOpts('a=,b=1')).toEqual([
      ['a', ''],
      ['b', '1'],
    ]);
    expect(splitQemuOpts('')).toEqual([]);
    expect(() => splitQemuOpts('=x')).toThrow("Invalid parameter '=x': empty name");
  });

  it('every legacy name maps to its throttling.* name, and each pair refuses to be used together', () => {
    const legacy: [string, string, string][] = [
      ['bps', 'throttling.bps-total', 'bpsTotal'],
      ['bps_rd', 'throttling.bps-read', 'bpsRead'],
      ['bps_wr', 'throttling.bps-write', 'bpsWrite'],
      ['iops', 'throttling.iops-total', 'iopsTotal'],
      ['iops_rd', 'throttling.iops-read', 'iopsRead'],
      ['iops_wr', 'throttling.iops-write', 'iopsWrite'],
      ['bps_max', 'throttling.bps-total-max', 'bpsTotalMax'],
      ['bps_rd_max', 'throttling.bps-read-max', 'bpsReadMax'],
      ['bps_wr_max', 'throttling.bps-write-max', 'bpsWriteMax'],
      ['iops_max', 'throttling.iops-total-max', 'iopsTotalMax'],
      ['iops_rd_max', 'throttling.iops-read-max', 'iopsReadMax'],
      ['iops_wr_max', 'throttling.iops-write-max', 'iopsWriteMax'],
      ['iops_size', 'throttling.iops-size', 'iopsSize'],
    ];
    for (const [old, name, field] of legacy) {
      // a max needs its avg, iops_size needs an iops rate: give the smallest valid companion
      const avg = field.endsWith('Max') ? field.slice(0, -3) : field === 'iopsSize' ? 'iopsTotal' : undefined;
      const companion = avg ? `,throttling.${toQapiName(avg)}=7` : '';
      const expected = avg ? { [field]: 7, [avg]: 7 } : { [field]: 7 };
      expect(parseDriveString(`file=x,${old}=7${companion}`).throttle).toEqual(expected);
      expect(parseDriveString(`file=x,${name}=7${companion}`).throttle).toEqual(expected);
      for (const order of [`${old}=7,${name}=7`, `${name}=7,${old}=7`]) {
        expect(() => parseDriveString(`file=x,${order}`)).toThrow(`'${name}' and its alias '${old}' can't be used at the same time`);
      }
    }
    expect(() => parseDriveString('file=x,readonly=on,read-only=on')).toThrow("'read-only' and its alias 'readonly' can't be used at the same time");
    expect(() => parseDriveString('file=x,driver=raw,format=raw')).toThrow("Cannot specify both 'driver' and 'format'");
    expect(parseDriveString('file=x,driver=qcow2').format).toBe('qcow2');
  });

  it('no *_max_length has a legacy name: each is an unknown option, while the throttling.* spelling works', () => {
    for (const old of ['bps_max_length', 'bps_rd_max_length', 'bps_wr_max_length', 'iops_max_length', 'iops_rd_max_length', 'iops_wr_max_length']) {
      expect(() => parseDriveString(`file=x,${old}=2`)).toThrow(expect.objectContaining({ code: 'EINVAL', message: `Invalid parameter '${old}'`, field: old }));
    }
    expect(parseDriveString('file=x,throttling.iops-read=1,throttling.iops-read-max=9,throttling.iops-read-max-length=60').throttle).toEqual({
      iopsRead: 1,
      iopsReadMax: 9,
      iopsReadMaxLength: 60,
    });
    expect(() => parseDriveString('file=x,throttling.iops-totl=1')).toThrow("Invalid parameter 'throttling.iops-totl'");
  });

  it('a key given twice keeps its last value, as QemuOpts does', () => {
    expect(parseDriveString('file=a,file=b,iops=1,iops=2,group=x,group=y')).toEqual({ filename: 'b', throttle: { iopsTotal: 2, group: 'y' } });
    expect(parseDriveString('file=a,readonly=on,readonly=off').readOnly).toBe(false);
  });

  it('booleans take on/off, yes/no, true/false and y/n', () => {
    for (const v of ['on', 'yes', 'true', 'y']) expect(parseDriveString(`file=x,readonly=${v}`).readOnly).toBe(true);
    for (const v of ['off', 'no', 'false', 'n']) expect(parseDriveString(`file=x,read-only=${v}`).readOnly).toBe(false);
    expect(() => parseDriveString('file=x,read-only=1')).toThrow("Parameter 'read-only' expects 'on' or 'off'");
  });

  it('numbers follow QemuOpts: decimal, 0x hex and 0 octal; negative, fractional and non-numeric values are refused by name', () => {
    expect(parseDriveString('file=x,iops=0x10').throttle).toEqual({ iopsTotal: 16 });
    expect(parseDriveString('file=x,iops=010').throttle).toEqual({ iopsTotal: 8 });
    expect(parseDriveString('file=x,iops=0').throttle).toEqual({ iopsTotal: 0 });
    expect(() => parseDriveString('file=x,iops=-1')).toThrow(expect.objectContaining({ code: 'EINVAL', message: "Parameter 'iops' expects a non-negative number", field: 'iops' }));
    expect(() => parseDriveString('file=x,throttling.bps-read=1.5')).toThrow("Parameter 'throttling.bps-read' expects a number");
    expect(() => parseDriveString('file=x,bps=1M')).toThrow("Parameter 'bps' expects a number");
    expect(() => parseDriveString('file=x,bps=')).toThrow("Parameter 'bps' expects a number");
    expect(() => parseDriveString('file=x,bps=09')).toThrow("Parameter 'bps' expects a number");
    expect(() => parseDriveString('file=x,bps=99999999999999999')).toThrow("Parameter 'bps' expects a number below 2^53");
  });

  it('values over 1e15 reach QEMU range rule; burst lengths over UINT_MAX get the range message naming the option', () => {
    expect(() => parseDriveString('file=x,bps=1000000000000001')).toThrow(/^bps: bps\/iops\/max values must be within \[0, 1000000000000000\]$/);
    expect(parseDriveString('file=x,bps=1000000000000000').throttle).toEqual({ bpsTotal: 1e15 });
    expect(() => parseDriveString('file=x,iops=1,iops_max=1,throttling.iops-total-max-length=0')).toThrow(/^throttling\.iops-total-max-length: the burst length cannot be 0$/);
    expect(() => parseDriveString('file=x,iops=1,throttling.iops-total-max-length=2')).toThrow(
      /^throttling\.iops-total-max-length, throttling\.iops-total-max: burst length set without burst rate$/,
    );
    expect(() => parseDriveString('file=x,iops=1,iops_max=3,throttling.iops-total-max-length=333333333333334')).toThrow(
      /^throttling\.iops-total-max-length: value must be in the range \[0, 4294967295\]$/,
    );
    expect(() => parseDriveString('file=x,iops=1,iops_max=1000000,throttling.iops-total-max-length=1000000001')).toThrow(
      /^throttling\.iops-total-max-length, iops_max: burst length too high for this burst rate$/,
    );
  });

  it('errors are BlockErrors with code EINVAL and the field as the user spelled it', () => {
    expect(() => parseDriveString('file=x,throttling.bps-total=100,bps_max=50')).toThrow(
      expect.objectContaining({ name: 'BlockError', code: 'EINVAL', field: 'bps_max', message: 'bps_max, throttling.bps-total: bps_max/iops_max cannot be lower than bps/iops' }),
    );
    expect(() => parseDriveString('file=x,group=')).toThrow(expect.objectContaining({ code: 'EINVAL', message: 'group: must not be empty' }));
    expect(() => parseDriveString('file=x,throttling.group=')).toThrow('throttling.group: must not be empty');
  });

  it('a group alone is kept (limits set later), and no throttling keys means no throttle member', () => {
    expect(parseDriveString('file=x,group=g').throttle).toEqual({ group: 'g' });
    expect(parseDriveString('file=x,id=d')).toEqual({ filename: 'x', id: 'd' });
  });

  it('aio=threads|io_uring chooses the file driver engine (the last one given wins); aio=native keeps the default', () => {
    expect(parseDriveString('file=x,aio=io_uring')).toEqual({ filename: 'x', aio: 'io_uring' });
    expect(parseDriveString('file=x,aio=io_uring,aio=threads')).toEqual({ filename: 'x', aio: 'threads' });
    expect(parseDriveString('file=x,aio=native')).toEqual({ filename: 'x' });
    expect(driveStringToOptions('file=x,format=qcow2,aio=io_uring')).toEqual({ driver: 'qcow2', file: { driver: 'file', filename: 'x', aio: 'io_uring' } });
    expect(driveStringToOptions('file=x,aio=native')).toEqual({ driver: 'raw', file: { driver: 'file', filename: 'x' } });
    expect(withAio({ driver: 'file', filename: 'x' }, 'io_uring')).toEqual({ driver: 'file', filename: 'x', aio: 'io_uring' });
    expect(withAio({ driver: 'nbd', server: {} }, 'io_uring')).toEqual({ driver: 'nbd', server: {} });
  });

  it('accepts each harmless key with every honourable value and refuses the rest with ENOTSUP naming the option', () => {
    const ok = [
      'if=none',
      'if=virtio',
      'if=ide',
      'index=0',
      'bus=0',
      'unit=1',
      'addr=0x5',
      'serial=abc',
      'media=disk',
      'aio=native',
      'cache=writeback',
      'cache=none',
      'cache=unsafe',
      'discard=ignore',
      'discard=unmap',
      'detect-zeroes=off',
      'snapshot=off',
      'copy-on-read=off',
    ];
    for (const kv of ok) expect(parseDriveString(`file=x,${kv}`)).toEqual({ filename: 'x' });
    const refused = [
      'cache=writethrough',
      'cache=directsync',
      'media=cdrom',
      'snapshot=on',
      'snapshot',
      'copy-on-read=on',
      'detect-zeroes=on',
      'detect-zeroes=unmap',
      'aio=posix',
    ];
    for (const kv of refused) {
      const key = kv.split('=')[0];
      expect(() => parseDriveString(`file=x,${kv}`)).toThrow(expect.objectContaining({ code: 'ENOTSUP', field: key, message: expect.stringContaining(key) }));
    }
    expect(() => parseDriveString('file=x,toString=1')).toThrow("Invalid parameter 'toString'");
  });

  it('round-trips limits over the whole valid range through -drive strings in both spellings, with escaped file and group', () => {
    fc.assert(
      fc.property(wideThrottleArb, fc.boolean(), fc.string({ unit: fc.constantFrom('a', ',', '/', '.', '='), minLength: 1, maxLength: 12, size: 'max' }), (t, legacy, file) => {
        const str = `file=${file.replaceAll(',', ',,')},${toDriveString(t, { legacy })}`;
        expect(parseDriveString(str)).toEqual({ filename: file, throttle: t });
        expect(driveStringToOptions(str).throttle).toEqual(t);
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips when each field independently picks its legacy or throttling.* spelling', () => {
    fc.assert(
      fc.property(wideThrottleArb, fc.array(fc.boolean(), { minLength: 20, maxLength: 20 }), fc.array(fc.double({ noNaN: true }), { minLength: 20, maxLength: 20 }), (t, picks, order) => {
        const parts = Object.entries(t).map(([k, v], i) => {
          if (k === 'group') return `${picks[i] ? 'group' : 'throttling.group'}=${String(v).replaceAll(',', ',,')}`;
          return picks[i] && !k.endsWith('Length') ? `${toQmpName(k)}=${v}` : `throttling.${toQapiName(k)}=${v}`;
        });
        const shuffled = parts.map((p, i) => [order[i], p] as const).sort((a, b) => a[0] - b[0]).map(([, p]) => p);
        expect(parseDriveString(`file=x,${shuffled.join(',')}`).throttle).toEqual(t);
      }),
      { numRuns: 300 },
    );
  });

  it('any mix of limits is accepted or refused exactly as validateLimits decides, with the same message in -drive spelling', () => {
    fc.assert(
      fc.property(anyLimitsArb, fc.boolean(), (limits, legacy) => {
        let expected = 'ok';
        try {
          validateLimits(limits);
        } catch (e) {
          expected = (e as Error).message.replace(/^[^:]*: /, '');
        }
        const str = `file=x,${toDriveString(limits, { legacy })}`;
        let got = 'ok';
        try {
          parseDriveString(str);
        } catch (e) {
          got = (e as Error).message.replace(/^[^:]*: /, '');
        }
        expect(got).toBe(expected);
      }),
      { numRuns: 1000 },
    );
  });
});
