import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compareRuns, previousRun, ratiosOf } from '../../bench/history.js';

describe('bench history', () => {
  it('finds every ratio in a result tree by its path, with its direction', () => {
    const r = ratiosOf({ date: 'x', a: { 'QD32': { subject: 2, baseline: 4, ratio: 0.5 } }, boot: { vsAsync: { ratio: 0.7, unit: 'ms (lower is better)' } }, bad: { ratio: Number.NaN } });
    expect([...r]).toEqual([
      ['a › QD32', { ratio: 0.5, lowerIsBetter: false }],
      ['boot › vsAsync', { ratio: 0.7, lowerIsBetter: true }],
    ]);
  });

  it('marks a ratio that fell (or a time ratio that rose) by more than the threshold', () => {
    const before = { a: { ratio: 1 }, b: { ratio: 1 }, t: { ratio: 1, unit: 'lower is better' }, gone: { ratio: 1 } };
    const now = { a: { ratio: 0.8 }, b: { ratio: 0.9 }, t: { ratio: 1.2, unit: 'lower is better' }, fresh: { ratio: 2 } };
    expect(compareRuns(now, before)).toEqual(['REGRESSION? a: 1.000 → 0.800 (-20.0 %)', 'b: 1.000 → 0.900 (-10.0 %)', 'REGRESSION? t: 1.000 → 1.200 (+20.0 %)']);
  });

  it('compares with the newest earlier run of the same kind, skipping broken files', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-bench-history-'));
    try {
      fs.writeFileSync(path.join(dir, '2026-01-01.json'), JSON.stringify({ full: false, n: 1 }));
      fs.writeFileSync(path.join(dir, '2026-01-02.json'), JSON.stringify({ full: true, n: 2 }));
      fs.writeFileSync(path.join(dir, '2026-01-03.json'), '{broken');
      fs.writeFileSync(path.join(dir, '2026-01-04.json'), JSON.stringify({ full: false, n: 4 }));
      expect(previousRun(dir, false, path.join(dir, '2026-01-04.json'))?.file).toBe('2026-01-01.json');
      expect(previousRun(dir, true, '')?.file).toBe('2026-01-02.json');
      expect(previousRun(path.join(dir, 'none'), true, '')).toBeUndefined();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
