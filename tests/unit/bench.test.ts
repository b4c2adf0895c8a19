import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LatencyHistogram } from '../../src/bench/histogram.js';
import { plotSvg } from '../../src/bench/plot.js';
import { benchResultSchema } from '../../src/bench/report.js';
import { runJob } from '../../src/bench/runner.js';
import { formatTable } from '../../src/bench/table.js';
import { CLI } from '../helpers/cli.js';

/** A target whose reads fail with EIO from the n-th one on (blkdebug over null). */
const failingTarget = (after: number, latencyNs = 0) => ({
  driver: 'blkdebug',
  rules: [{ event: 'read', code: 'EIO', after }],
  file: { driver: 'null', size: '1G', ...(latencyNs ? { latencyNs } : {}) },
});

/** Lets Node report unhandled rejections: they are emitted after the microtask queue drains. */
const turns = async (n = 3) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

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

  describe('an I/O error stops the job', () => {
    const unhandled = vi.fn();
    beforeEach(() => {
      unhandled.mockClear();
      process.on('unhandledRejection', unhandled);
    });
    afterEach(() => {
      process.off('unhandledRejection', unhandled);
    });

    it('on the real clock: runJob rejects with the EIO before half the runtime, with no unhandled rejection', async () => {
      const t0 = performance.now();
      const job = runJob({ runtime: 5, iodepth: 8, drives: 2, target: failingTarget(20) });
      await expect(job).rejects.toMatchObject({ name: 'BlockError', code: 'EIO', message: expect.stringMatching(/blkdebug: injected EIO on read/) });
      // A correctness bound, not a speed one: the job must not wait for its 5 s runtime.
      expect(performance.now() - t0).toBeLessThan(2500);
      await turns();
      expect(unhandled).not.toHaveBeenCalled();
    });

    it('on the real clock under a limit: queued requests are released and the job rejects before half the runtime', async () => {
      const t0 = performance.now();
      const job = runJob({ runtime: 5, iodepth: 64, drives: 2, group: 'g', limits: { iopsTotal: 200 }, target: failingTarget(5) });
      await expect(job).rejects.toMatchObject({ code: 'EIO' });
      expect(performance.now() - t0).toBeLessThan(2500);
      await turns();
      expect(unhandled).not.toHaveBeenCalled();
    });

    it('on the virtual clock: runJob rejects with the EIO, with no unhandled rejection', async () => {
      const job = runJob({ clock: 'virtual', runtime: 5, iodepth: 4, limits: { iopsTotal: 100 }, target: failingTarget(30, 3_000_000) });
      await expect(job).rejects.toMatchObject({ code: 'EIO' });
      await turns();
      expect(unhandled).not.toHaveBeenCalled();
    });

    it('a size-bound job with progress rejects with the EIO, with no unhandled rejection', async () => {
      const progress = vi.fn();
      await expect(runJob({ size: '1G', iodepth: 4, target: failingTarget(10) }, progress)).rejects.toMatchObject({ code: 'EIO' });
      await expect(runJob({ clock: 'virtual', size: '1G', iodepth: 4, target: failingTarget(10) }, progress)).rejects.toMatchObject({ code: 'EIO' });
      await turns();
      expect(unhandled).not.toHaveBeenCalled();
    });
  });

  it('a virtual-clock job ends when requests are still in flight at its end (latency not a divisor of the runtime)', async () => {
    const r = await runJob({ clock: 'virtual', runtime: 1, target: { driver: 'null', latencyNs: 3_000_000 } });
    // One request in flight at a time, 3 ms each: 333 complete before 1 s, the 334th at 1.002 s.
    expect(r.total.ops).toBe(333);
    expect(r.durationS).toBe(1);
  });

  it('refuses sizes, depths, runtimes and slices that cannot make a job, naming the field', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ bs: 0 }, 'bs'],
      [{ bs: '0' }, 'bs'],
      [{ bs: -4096 }, 'bs'],
      [{ bs: 4096.5 }, 'bs'],
      [{ bs: '3G' }, 'bs'],
      [{ size: 0 }, 'size'],
      [{ size: -1 }, 'size'],
      [{ size: 1000, bs: 4096 }, 'size'],
      [{ iodepth: 0 }, 'iodepth'],
      [{ iodepth: 1.5 }, 'iodepth'],
      [{ iodepth: Number.NaN }, 'iodepth'],
      [{ iodepth: Number.POSITIVE_INFINITY }, 'iodepth'],
      [{ runtime: 0 }, 'runtime'],
      [{ runtime: -1 }, 'runtime'],
      [{ runtime: Number.NaN }, 'runtime'],
      [{ runtime: Number.POSITIVE_INFINITY }, 'runtime'],
      [{ runtime: 1e7 }, 'runtime'],
      [{ sliceMs: 0 }, 'sliceMs'],
      [{ sliceMs: Number.NaN }, 'sliceMs'],
      [{ sliceMs: Number.POSITIVE_INFINITY }, 'sliceMs'],
      [{ sliceMs: 0.5 }, 'sliceMs'],
      [{ runtime: 2000, sliceMs: 1 }, 'sliceMs'],
    ];
    for (const [job, field] of cases) {
      await expect(runJob(job), JSON.stringify(job)).rejects.toMatchObject({ name: 'BlockError', code: 'EINVAL', field, message: expect.stringMatching(new RegExp(`^${field}: `)) });
    }
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
    const cli = (...args: string[]) => spawnSync(process.execPath, [...CLI, 'bench', ...args], { encoding: 'utf8' });

  it('prints the JSON result with --json', () => {
    const r = cli('--clock', 'virtual', '--runtime', '2', '--iodepth', '4', '--iops', '100', '--json');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).total.ops).toBe(11 + 199);
  });

  it('a bad flag, a missing file and a bad limit each fail with one clear line', () => {
    for (const [args, msg] of [
      [['--frobnicate'], /^blocklayer bench: unknown option '--frobnicate' \(see 'blocklayer bench --help'\)\n$/],
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

  it('a zero block size or runtime and a bad json: target each fail with one clear line', () => {
    for (const [args, msg] of [
      [['--bs', '0'], /^blocklayer bench: EINVAL: bs: must be at least 1 byte\n$/],
      [['--runtime', '0'], /^blocklayer bench: EINVAL: runtime: /],
      [['--filename', 'json:{"driver":'], /^blocklayer bench: EINVAL: --filename: json: target is not valid JSON/],
    ] as [string[], RegExp][]) {
      const r = cli(...args);
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
  });

  it('--clock virtual on a target that does real I/O (a file, also inside a json: tree or a --drive) is refused with one line naming --clock; null, memory and filters over them run', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-bench-clock-'));
    try {
      const file = path.join(dir, 'd.raw');
      fs.writeFileSync(file, Buffer.alloc(1 << 20));
      const before = fs.statSync(file).mtimeMs;
      for (const target of [
        ['--filename', file],
        ['--filename', `json:${JSON.stringify({ driver: 'raw', file: { driver: 'file', filename: file } })}`],
        ['--drive', `file=${file},format=raw,iops=100`],
      ]) {
        const r = cli('--clock', 'virtual', '--runtime', '1', '--rw', 'randwrite', ...target);
        expect([r.status, r.stdout]).toEqual([1, '']);
        expect(r.stderr).toBe('blocklayer bench: EINVAL: --clock virtual: the target does real I/O (a file node), which a virtual clock cannot time; use --clock real, or --driver null|memory\n');
      }
      expect(fs.statSync(file).mtimeMs).toBe(before);
      for (const target of [['--driver', 'memory', '--target-size', '4M'], ['--filename', `json:${JSON.stringify(failingTarget(1e9))}`]]) {
        const r = cli('--clock', 'virtual', '--runtime', '1', '--iops', '100', '-q', ...target);
        expect([target[1], r.status, r.stderr]).toEqual([target[1], 0, '']);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('an I/O error during the job exits 1 with one line naming the error', () => {
    const target = JSON.stringify(failingTarget(50));
    const r = cli('--filename', `json:${target}`, '--runtime', '5', '--iodepth', '4');
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^blocklayer bench: EIO: blkdebug: injected EIO on read at offset \d+\n$/);
    expect(r.stdout).toBe('');
  });
});
