import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AUTO_ERROR_ACTION,
  driveStringToOptions,
  type ErrorAction,
  errorActionSchema,
  parseDriveErrorAction,
  parseDriveString,
  parseErrorAction,
  readErrorActionSchema,
  toDriveString,
} from '../../src/index.js';
import { wideThrottleArb } from '../helpers/limits-arb.js';

const einval = (field: string, message: string) => expect.objectContaining({ name: 'BlockError', code: 'EINVAL', field, message });

const ALL: ErrorAction[] = ['report', 'ignore', 'stop', 'enospc'];
const READ: ErrorAction[] = ['report', 'ignore', 'stop'];

describe('error policy schemas', () => {
  it('errorActionSchema takes the four policies; readErrorActionSchema all but enospc', () => {
    expect(errorActionSchema.options).toEqual(ALL);
    for (const a of ALL) expect(errorActionSchema.parse(a)).toBe(a);
    for (const a of READ) expect(readErrorActionSchema.parse(a)).toBe(a);
    expect(readErrorActionSchema.safeParse('enospc').success).toBe(false);
    for (const bad of ['auto', 'Stop', '', ' report', 'retry', 42, null]) expect(errorActionSchema.safeParse(bad).success).toBe(false);
  });
});

describe('-drive rerror= and werror=', () => {
  it('every accepted spelling lands on the parse result and on the drive options', () => {
    for (const w of ALL) {
      expect(parseDriveString(`file=x,werror=${w}`)).toEqual({ filename: 'x', werror: w });
      expect(driveStringToOptions(`file=x,werror=${w}`)).toEqual({ driver: 'raw', file: { driver: 'file', filename: 'x' }, werror: w });
    }
    for (const r of READ) {
      expect(parseDriveString(`file=x,rerror=${r}`)).toEqual({ filename: 'x', rerror: r });
      expect(driveStringToOptions(`rerror=${r},file=x`)).toEqual({ driver: 'raw', file: { driver: 'file', filename: 'x' }, rerror: r });
    }
    expect(parseDriveString('file=x,rerror=stop,werror=enospc,iops=5')).toEqual({ filename: 'x', rerror: 'stop', werror: 'enospc', throttle: { iopsTotal: 5 } });
    // QemuOpts: a repeated key keeps its last value.
    expect(parseDriveString('file=x,werror=stop,werror=ignore').werror).toBe('ignore');
  });

  it("refuses enospc for reads and unknown values with QEMU's message, EINVAL naming the key", () => {
    expect(() => parseDriveString('file=x,rerror=enospc')).toThrow(einval('rerror', "'enospc' invalid read error action"));
    for (const bad of ['auto', 'Stop', 'REPORT', 'retry', 'off', 'on', '']) {
      expect(() => parseDriveString(`file=x,werror=${bad}`)).toThrow(einval('werror', `'${bad}' invalid write error action`));
      expect(() => parseDriveString(`file=x,rerror=${bad}`)).toThrow(einval('rerror', `'${bad}' invalid read error action`));
    }
    // A bare key is `on` in QemuOpts.
    expect(() => parseDriveString('file=x,werror')).toThrow(einval('werror', "'on' invalid write error action"));
    // A comma inside a value (doubled) is part of the value.
    expect(() => parseDriveString('file=x,werror=stop,,x')).toThrow(einval('werror', "'stop,x' invalid write error action"));
  });

  it('round-trips through toDriveString, alone and with limits in both spellings', () => {
    for (const werror of ALL) for (const rerror of READ) {
      const s = toDriveString({}, { rerror, werror });
      expect(s).toBe(`rerror=${rerror},werror=${werror}`);
      expect(parseDriveString(`file=x,${s}`)).toEqual({ filename: 'x', rerror, werror });
    }
    expect(toDriveString({})).toBe('');
    fc.assert(
      fc.property(
        wideThrottleArb,
        fc.boolean(),
        fc.option(fc.constantFrom(...READ), { nil: undefined }),
        fc.option(fc.constantFrom(...ALL), { nil: undefined }),
        (t, legacy, rerror, werror) => {
          const opts = { legacy, ...(rerror ? { rerror } : {}), ...(werror ? { werror } : {}) };
          const expected = { filename: 'x', ...(rerror ? { rerror } : {}), ...(werror ? { werror } : {}), ...(Object.keys(t).length ? { throttle: t } : {}) };
          const s = toDriveString(t, opts);
          expect(parseDriveString(`file=x${s ? `,${s}` : ''}`)).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('toDriveString refuses a policy the parser would refuse', () => {
    expect(() => toDriveString({}, { rerror: 'enospc' })).toThrow(einval('rerror', "'enospc' invalid read error action"));
    expect(() => toDriveString({}, { werror: 'auto' as never })).toThrow(einval('werror', "'auto' invalid write error action"));
    expect(() => toDriveString({}, { werror: 3 as never })).toThrow(einval('werror', 'werror: must be a string, got a number'));
  });
});

describe('QMP BlockdevOnError spellings: parseErrorAction', () => {
  it('accepts report, ignore, stop (both directions) and enospc (writes), returning them as they are', () => {
    for (const a of ALL) expect(parseErrorAction(a, 'write')).toBe(a);
    for (const a of READ) expect(parseErrorAction(a, 'read')).toBe(a);
  });

  it("maps 'auto' to the -drive backend's defaults: report for reads, enospc for writes", () => {
    expect(parseErrorAction('auto', 'read')).toBe('report');
    expect(parseErrorAction('auto', 'write')).toBe('enospc');
    expect(AUTO_ERROR_ACTION).toEqual({ read: 'report', write: 'enospc' });
  });

  it("refuses with QMP's messages and EINVAL naming the field (default rerror/werror, or the one given)", () => {
    expect(() => parseErrorAction('enospc', 'read')).toThrow(einval('rerror', "'enospc' invalid read error action"));
    expect(() => parseErrorAction('retry', 'write')).toThrow(einval('werror', "Parameter 'werror' does not accept value 'retry'"));
    expect(() => parseErrorAction('Auto', 'read', 'device.rerror')).toThrow(einval('device.rerror', "Parameter 'device.rerror' does not accept value 'Auto'"));
    expect(() => parseErrorAction('', 'write')).toThrow(einval('werror', "Parameter 'werror' does not accept value ''"));
    for (const bad of [null, undefined, 1, true, ['stop'], { action: 'stop' }]) {
      expect(() => parseErrorAction(bad, 'write')).toThrow(einval('werror', "Invalid parameter type for 'werror', expected: string"));
    }
    expect(() => parseErrorAction('stop', 'both' as never)).toThrow(einval('direction', `direction: must be 'read' or 'write', got "both"`));
  });

  it("parseDriveErrorAction is the -drive rule: no 'auto'", () => {
    expect(parseDriveErrorAction('stop', 'read')).toBe('stop');
    expect(() => parseDriveErrorAction('auto', 'write')).toThrow(einval('werror', "'auto' invalid write error action"));
    expect(() => parseDriveErrorAction('enospc', 'read', 'x.rerror')).toThrow(einval('x.rerror', "'enospc' invalid read error action"));
  });
});
