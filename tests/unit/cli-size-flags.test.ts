import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parseLimitFlags, sizeFlag } from '../../src/cli/limit-flags.js';
import { CLI } from '../helpers/cli.js';

const cli = (...args: string[]) => {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

describe('size flags take suffixes, as --bs always did', () => {
  it('sizeFlag: bytes, or k/M/G/T with powers of 1024; a negative number is left for the range check; anything else names the flag', () => {
    const table: [string, number][] = [
      ['4096', 4096],
      ['4k', 4096],
      ['4K', 4096],
      ['8KiB', 8192],
      ['1M', 2 ** 20],
      ['1.5k', 1536],
      ['2G', 2 ** 31],
      ['1T', 2 ** 40],
      ['0', 0],
      ['-1', -1],
    ];
    for (const [v, n] of table) expect([v, sizeFlag('bps-rd', v)]).toEqual([v, n]);
    for (const v of ['', 'abc', '1X', '4k4', '--1']) {
      expect(() => sizeFlag('bps-rd', v)).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'bps-rd', message: `--bps-rd: '${v}' is not a size (e.g. 4096, 4k, 1M)` }));
    }
  });

  it('limit flags: every bps flag and --iops-size take sizes; iops counts and burst lengths are plain numbers', () => {
    const bytes: [string, string][] = [
      ['bps', 'bpsTotal'],
      ['bps-rd', 'bpsRead'],
      ['bps-wr', 'bpsWrite'],
      ['bps-max', 'bpsTotalMax'],
      ['bps-rd-max', 'bpsReadMax'],
      ['bps-wr-max', 'bpsWriteMax'],
    ];
    for (const [flag, field] of bytes) {
      // a -max needs its average; --iops-size needs an iops limit
      const avg = flag.endsWith('-max') ? { [flag.slice(0, -4)]: '512k' } : {};
      expect([flag, parseLimitFlags({ ...avg, [flag]: '1M' })[field as 'bpsTotal']]).toEqual([flag, 2 ** 20]);
    }
    expect(parseLimitFlags({ iops: '100', 'iops-size': '8k' })).toEqual({ iopsTotal: 100, iopsSize: 8192 });
    expect(parseLimitFlags({ 'bps-rd': '4096' })).toEqual({ bpsRead: 4096 });
    for (const [flag, extra] of [
      ['iops', {}],
      ['iops-rd', {}],
      ['iops-max', { iops: '10' }],
      ['bps-max-length', { bps: '1M', 'bps-max': '2M' }],
    ] as const) {
      expect(() => parseLimitFlags({ ...extra, [flag]: '1k' })).toThrow(expect.objectContaining({ code: 'EINVAL', message: `--${flag}: '1k' is not a number` }));
    }
    // a negative size still gets QEMU's range message, naming the flag
    expect(() => parseLimitFlags({ 'bps-rd': '-1' })).toThrow(/--bps-rd/);
  });

  it('the CLI: bench --bs, --size, --target-size, --bps-rd, --iops-size with suffixes; serve --memory-budget, bench --size refuse a non-size naming the flag', () => {
    const r = cli('bench', '--driver', 'memory', '--target-size', '4M', '--size', '1M', '--bs', '4k', '--bps-rd', '1M', '--iops', '100', '--iops-size', '8k', '--runtime', '1', '--clock', 'virtual', '--rw', 'randread', '--json');
    expect([r.code, r.err]).toEqual([0, '']);
    expect(JSON.parse(r.out).job).toMatchObject({ target: { driver: 'memory', size: 4 * 2 ** 20 }, size: 2 ** 20, bs: 4096, limits: { bpsRead: 2 ** 20, iopsTotal: 100, iopsSize: 8192 } });
    expect(cli('bench', '--driver', 'memory', '--size', 'lots').err).toBe("blocklayer bench: EINVAL: --size: 'lots' is not a size (e.g. 4096, 4k, 1M)\n");
    expect(cli('serve', '--memory-budget', '1Q', '/dev/null').err).toBe("blocklayer serve: EINVAL: --memory-budget: '1Q' is not a size (e.g. 4096, 4k, 1M)\n");
  }, 60_000);
});
