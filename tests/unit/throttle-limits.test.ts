import { describe, expect, it } from 'vitest';
import { BlockError } from '../../src/index.js';
import { fromConfig, isEnabled, type ThrottleLimits, validateLimits } from '../../src/throttle/limits.js';

function verdict(l: ThrottleLimits): string {
  try {
    validateLimits(l);
    return 'ok';
  } catch (e) {
    expect(e).toBeInstanceOf(BlockError);
    expect((e as BlockError).code).toBe('EINVAL');
    return (e as BlockError).message;
  }
}

const names = ['bpsTotal', 'bpsRead', 'bpsWrite', 'iopsTotal', 'iopsRead', 'iopsWrite'] as const;

describe('limit validation (reference §2 and §5.2)', () => {
  it('all zero is valid and means throttling off', () => {
    expect(isEnabled(validateLimits({}))).toBe(false);
  });

  it('any single bucket at 150 is valid and enabled; negative is refused with the range message', () => {
    for (const n of names) {
      expect(isEnabled(validateLimits({ [n]: 150 }))).toBe(true);
      expect(verdict({ [n]: -150 })).toMatch(new RegExp(`^${n}: .*must be within \\[0, 1000000000000000\\]`));
      expect(verdict({ [n]: 1, [`${n}Max`]: 1 })).toBe('ok');
    }
  });

  it('total and read/write of one kind cannot be combined (avg or max), naming both fields', () => {
    expect(verdict({ bpsTotal: 1, bpsRead: 1 })).toMatch(/^bpsTotal, bpsRead: .*cannot be used at the same time/);
    expect(verdict({ iopsTotal: 1, iopsWrite: 1 })).toMatch(/^iopsTotal, iopsWrite: /);
    expect(verdict({ iopsTotal: 1, iopsRead: 1, iopsWrite: 1 })).toMatch(/cannot be used at the same time/);
    expect(verdict({ bpsTotal: 10, bpsTotalMax: 20, bpsReadMax: 20 })).toMatch(/^bpsTotalMax, bpsReadMax: /);
    expect(verdict({ bpsTotal: 1 })).toBe('ok');
    expect(verdict({ bpsRead: 1, bpsWrite: 1 })).toBe('ok');
  });

  it('applies the range limit of 1e15 to avg and max', () => {
    expect(verdict({ bpsTotal: 1e15 })).toBe('ok');
    expect(verdict({ bpsTotal: 1e15, bpsTotalMax: 1e15 })).toBe('ok');
    expect(verdict({ bpsTotal: 1e15 + 1 })).toMatch(/must be within/);
    expect(verdict({ bpsTotal: 1e15, bpsTotalMax: 1e15 + 1 })).toMatch(/^bpsTotalMax: .*must be within/);
  });

  it('checks burst lengths: not 0, not without a burst rate, and max × length ≤ 1e15', () => {
    expect(verdict({ iopsTotal: 1, iopsTotalMax: 1, iopsTotalMaxLength: 0 })).toMatch(/burst length cannot be 0/);
    expect(verdict({ iopsTotal: 1, iopsTotalMax: 1, iopsTotalMaxLength: 1 })).toBe('ok');
    expect(verdict({ iopsTotal: 1, iopsTotalMax: 1, iopsTotalMaxLength: 1e15 })).toMatch(/range \[0, 4294967295\]/);
    expect(verdict({ iopsTotal: 1, iopsTotalMax: 2, iopsTotalMaxLength: 4294967295 })).toBe('ok');
    expect(verdict({ iopsTotal: 1, iopsTotalMax: 1e15, iopsTotalMaxLength: 1 })).toBe('ok');
    expect(verdict({ iopsTotal: 1, iopsTotalMax: 1e15, iopsTotalMaxLength: 2 })).toMatch(/burst length too high/);
    expect(verdict({ iopsTotal: 1, iopsTotalMax: 3e6, iopsTotalMaxLength: 333333334 })).toMatch(/burst length too high/);
    expect(verdict({ bpsTotal: 100, bpsTotalMaxLength: 2 })).toMatch(/^bpsTotalMaxLength, bpsTotalMax: burst length set without burst rate/);
    expect(verdict({ bpsTotal: 100, bpsTotalMax: 200, bpsTotalMaxLength: 0 })).toMatch(/cannot be 0/);
  });

  it('a burst rate needs an average rate and may not be below it (equal is fine)', () => {
    expect(verdict({ bpsTotalMax: 100 })).toMatch(/require corresponding/);
    expect(verdict({ bpsTotal: 100, bpsTotalMax: 30 })).toMatch(/cannot be lower/);
    expect(verdict({ bpsTotal: 100, bpsTotalMax: 100 })).toBe('ok');
    expect(verdict({ bpsTotal: 100 })).toBe('ok');
  });

  it('iopsSize requires an iops rate; a negative iopsSize is refused (unlike QEMU)', () => {
    expect(verdict({ bpsTotal: 100, iopsSize: 4096 })).toMatch(/^iopsSize: iops size requires an iops value/);
    expect(verdict({ iopsRead: 100, iopsSize: 4096 })).toBe('ok');
    expect(verdict({ iopsRead: 100, iopsSize: -1 })).toMatch(/^iopsSize: must not be negative/);
  });

  it('reports the first failing rule in QEMU order when several fail', () => {
    // Conflict (rule 1) comes before range (rule 3).
    expect(verdict({ bpsTotal: -1, bpsRead: 5 })).toMatch(/cannot be used at the same time/);
    // iops size (rule 2) before burst rate (rule 7).
    expect(verdict({ bpsTotalMax: 5, iopsSize: 10 })).toMatch(/iops size requires/);
  });

  it('refuses unknown limit names and non-integers, naming the field', () => {
    expect(verdict({ iops: 5 } as unknown as ThrottleLimits)).toMatch(/^iops: unknown limit/);
    expect(verdict({ iopsTotal: 1.5 })).toMatch(/^iopsTotal: must be a whole number/);
  });

  it('fromConfig gives back exactly the fields that were set', () => {
    const l = { iopsTotal: 100, iopsTotalMax: 2000, iopsTotalMaxLength: 60, iopsSize: 4096, bpsRead: 5 };
    expect(fromConfig(validateLimits(l))).toEqual(l);
  });
});
