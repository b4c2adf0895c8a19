import { describe, expect, it } from 'vitest';
import { account, bucketWait, configure, createState, leak, waitFor } from '../../src/throttle/bucket.js';
import { emptyConfig, type ThrottleConfig } from '../../src/throttle/limits.js';

function single(i: number, avg: number, max: number, burstLength: number, opSize = 0): ThrottleConfig {
  const c = emptyConfig();
  const buckets = c.buckets.map((b) => ({ ...b }));
  buckets[i] = { avg, max, burstLength };
  return { buckets, opSize };
}

const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThan(1e-6);

describe('bucket arithmetic (reference §5.1, QEMU test-throttle.c)', () => {
  it('V-LEAK-1: a bucket leaks at avg per second and stops at zero; the burst bucket leaks at max', () => {
    const s = createState(single(0, 150, 15, 1), 0);
    s.level[0] = 1.5;
    let now = 0;
    now += Math.floor(1e9 / 150);
    leak(s, now);
    close(s.level[0], 0.5);
    now += Math.floor(1e9 / 150);
    leak(s, now);
    close(s.level[0], 0);
    now += Math.floor(1e9 / 150);
    leak(s, now);
    expect(s.level[0]).toBe(0);
    s.config = single(0, 150, 250, 2);
    s.burstLevel[0] = 6;
    for (const expected of [3.5, 1.0, 0, 0]) {
      now += 10_000_000;
      leak(s, now);
      close(s.burstLevel[0], expected);
    }
  });

  it('V-WAIT-1: wait is zero when the bucket is off or not above its size, else the overflow at avg', () => {
    expect(bucketWait(0, 15, 1, 1.5, 0)).toBe(0);
    expect(bucketWait(150, 15, 1, 15, 0)).toBe(0);
    expect(bucketWait(150, 15, 1, 9, 0)).toBe(0);
    expect(bucketWait(150, 15, 1, 15.5, 0)).toBe(3_333_333);
  });

  it('V-WAIT-2: a burst at max/10 per 100 ms runs until the main bucket of max*L fills', () => {
    const s = createState(single(0, 10, 200, 2), 0);
    let now = 0;
    for (let i = 0; i < 22; i++) {
      s.level[0] += 20;
      s.burstLevel[0] += 20;
      now += 100_000_000;
      leak(s, now);
      close(s.burstLevel[0], 0);
      close(s.level[0], (i + 1) * 19);
      const b = s.config.buckets[0];
      expect(bucketWait(b.avg, b.max, b.burstLength, s.level[0], s.burstLevel[0])).toBe(i < 21 ? 0 : 1_800_000_000);
    }
  });

  it('V-ACCT: accounting adds bytes to bps buckets and (fractional) operations to iops buckets', () => {
    const cases: [kind: 'bps' | 'ops', size: number, avg: number, opSize: number, total: number, rd: number][] = [
      ['bps', 512, 150, 0, 1024, 512],
      ['bps', 1024, 150, 0, 2048, 1024],
      ['bps', 1024, 150, 17, 2048, 1024],
      ['ops', 512, 150, 0, 2, 1],
      ['ops', 1024, 150, 0, 2, 1],
      ['ops', 32768, 150, 6656, 128 / 13, 64 / 13],
      ['ops', 32768, 300, 6656, 128 / 13, 64 / 13],
    ];
    for (const [kind, size, avg, opSize, total, rd] of cases) {
      const base = kind === 'bps' ? 0 : 3;
      const c = emptyConfig();
      const buckets = c.buckets.map((b, i) => (i >= base && i < base + 3 ? { ...b, avg } : { ...b }));
      const s = createState({ buckets, opSize }, 0);
      configure(s, { buckets, opSize }, 0);
      account(s, 0, size);
      account(s, 1, size);
      close(s.level[base], total);
      close(s.level[base + 1], rd);
      close(s.level[base + 2], rd);
    }
  });

  it('a read waits on the total and read buckets only, never on the write buckets', () => {
    const c = emptyConfig();
    const buckets = c.buckets.map((b) => ({ ...b }));
    buckets[5] = { avg: 10, max: 0, burstLength: 1 }; // iops write
    const s = createState({ buckets, opSize: 0 }, 0);
    s.level[5] = 100;
    expect(waitFor(s, 0)).toBe(0);
    expect(waitFor(s, 1)).toBeGreaterThan(0);
  });

  it('reconfiguring empties every bucket', () => {
    const s = createState(single(0, 100, 0, 1), 0);
    account(s, 0, 5000);
    configure(s, single(0, 100, 0, 1), 42);
    expect([...s.level]).toEqual([0, 0, 0, 0, 0, 0]);
    expect(s.previousLeak).toBe(42);
  });
});
