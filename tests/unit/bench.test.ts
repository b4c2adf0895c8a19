import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LatencyHistogram } from '../../src/bench/histogram.js';
import { plotSvg } from '../../src/bench/plot.js';
import { benchResultSchema } from '../../src/bench/report.js';
import { runJob } from '../../src/bench/runner.js';
import { formatTable } from '../../src/bench/table.js';

/** A minimal XML well-formedness check: every tag closes in order, attributes are quoted. */
function wellFormed(xml: string): boolean {
  const stack: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<|>/g;
  for (let m = tag.exec(xml); m; m = tag.exec(xml)) {
    if (m[2] === undefined) return false; // a stray < or >
    const names = [...(m[3] ?? '').matchAll(/([\w:-]+)=/g)].map((a) => a[1]);
    if (new Set(names).size !== names.length) return false; // an attribute given twice
    if (m[1]) {
      if (stack.pop() !== m[2]) return false;
    } else if (!m[4]) stack.push(m[2]);
  }
  return stack.length === 0;
}

describe('benchmark harness', () => {
  it('a virtual-clock job under iopsTotal 100 reports exactly the leaky-bucket rate', async () => {
    const r = await runJob({ clock: 'virtual', runtime: 10, iodepth: 8, limits: { iopsTotal: 100 } });
    // 11 at t=0 (bucket of avg/10 = 10 ops, check then account), then one every 10 ms: 10 ms … 9990 ms.
    expect(r.total.ops).toBe(11 + 999);
    expect(r.durationS).toBe(10);
    expect(r.total.iops).toBeCloseTo(101, 10);
    expect(r.series.drives[0].iops[0]).toBe(200); // 20 admissions in the first 100 ms slice
    expect(r.series.drives[0].iops.slice(1)).toEqual(Array(99).fill(100));
    // Steady state: 8 requests in flight, one admitted per 10 ms: each waits 80 ms.
    expect(r.total.latencyNs.p50).toBe(80_000_000);
  });

  it('a virtual-clock bps job admits 2 requests at once, the 3rd at 25 ms, then one per 62.5 ms', async () => {
    const r = await runJob({ clock: 'virtual', runtime: 5, iodepth: 4, bs: '64k', rw: 'read', limits: { bpsRead: 1048576 } });
    // 0, 0, 25 ms + k × 62.5 ms for k = 0 … 79 (< 5 s).
    expect(r.total.ops).toBe(2 + 80);
    expect(r.total.bytes).toBe(82 * 65536);
  });

  it('drives sharing a group split its rate evenly', async () => {
    const r = await runJob({ clock: 'virtual', runtime: 5, iodepth: 4, drives: 3, group: 'g', limits: { iopsTotal: 300 } });
    const share = r.drives.map((d) => d.ops / r.total.ops);
    for (const s of share) expect(Math.abs(s - 1 / 3)).toBeLessThan(0.01);
  });

  it('a size-bound job on the real clock transfers exactly its size', async () => {
    const r = await runJob({ size: '1M', bs: '4k', iodepth: 4, rw: 'write', target: { driver: 'memory', size: '4M' } });
    expect(r.total.ops).toBe(256);
    expect(r.total.writeOps).toBe(256);
  });

  it('refuses a virtual runtime job that could never advance time, and bad limits, naming the field', async () => {
    await expect(runJob({ clock: 'virtual', runtime: 1 })).rejects.toThrow(/^clock: a virtual-clock job/);
    await expect(runJob({ limits: { iopsTotal: 5, iopsRead: 5 } })).rejects.toThrow(/^limits\.iopsTotal, limits\.iopsRead: /);
    await expect(runJob({ iodepth: 0 })).rejects.toThrow(/^iodepth: /);
  });

  it('histogram percentiles are exact below 128 ns and within 1/64 above', () => {
    const h = new LatencyHistogram();
    for (let i = 1; i <= 100; i++) h.record(i);
    expect(h.summary()).toMatchObject({ count: 100, min: 1, max: 100, p50: 50, p90: 90, p99: 99 });
    const g = new LatencyHistogram();
    for (let i = 1; i <= 100_000; i++) g.record(i * 1000);
    const s = g.summary();
    expect(Math.abs(s.p50 - 50_000_000) / 50_000_000).toBeLessThan(1 / 64);
    expect(Math.abs(s.p999 - 99_900_000) / 99_900_000).toBeLessThan(1 / 64);
    expect(s.mean).toBe(50_000_500);
  });

  it('the JSON result keeps its documented shape; table and SVG are made from it', async () => {
    const r = await runJob({ clock: 'virtual', runtime: 2, iodepth: 2, drives: 2, group: 'g', limits: { iopsTotal: 50, iopsTotalMax: 200, iopsTotalMaxLength: 1 } });
    const json = JSON.parse(JSON.stringify(r));
    expect(benchResultSchema.parse(json)).toEqual(json);
    expect(Object.keys(json)).toEqual(['version', 'job', 'clock', 'durationS', 'limits', 'group', 'total', 'drives', 'series', 'histogram']);
    const table = formatTable(json);
    expect(table).toMatch(/job0 .*\n.*job1 .*\ntotal /);
    const svg = plotSvg(json);
    expect(wellFormed('<svg><a x="1" x="2"/></svg>')).toBe(false);
    expect(wellFormed(svg)).toBe(true);
    expect(svg).toContain('limit iopsTotal 50');
    expect(svg).toContain('group total');
  });
});

describe('blocklayer bench (CLI)', () => {
  const MAIN = path.join(import.meta.dirname, '../../src/cli/main.ts');
  const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', MAIN, 'bench', ...args], { encoding: 'utf8' });

  it('prints the JSON result with --json', () => {
    const r = cli('--clock', 'virtual', '--runtime', '2', '--iodepth', '4', '--iops', '100', '--json');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).total.ops).toBe(11 + 199);
  });

  it('a bad flag, a missing file and a bad limit each fail with one clear line', () => {
    for (const [args, msg] of [
      [['--frobnicate'], /Unknown option '--frobnicate'/],
      [['--filename', '/no/such.img'], /ENOENT: \/no\/such\.img: no such file/],
      [['--iops', '5', '--iops-rd', '5'], /--iops, --iops-rd: .*cannot be used at the same time/],
      [['--iops-max', '10'], /--iops-max, --iops: .*require corresponding/],
    ] as [string[], RegExp][]) {
      const r = cli(...args);
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
  });
});
