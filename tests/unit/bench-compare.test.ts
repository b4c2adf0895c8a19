import { describe, expect, it } from 'vitest';
import { parseQemuImgBench, qemuImgBenchArgs } from '../../src/cli/bench-compare.js';

describe('bench --compare qemu-img: a like-for-like qemu-img bench', () => {
  const target = { filename: '/tmp/x.img', format: 'raw', aio: 'io_uring' as const };
  const job = { bs: 4096, iodepth: 8, write: false };

  it('uses the engine our job used, the page cache, and our request count, size and depth', () => {
    const args = qemuImgBenchArgs(target, job, 12345);
    const flag = (f: string) => args[args.indexOf(f) + 1];
    expect(args[0]).toBe('bench');
    expect(flag('-i')).toBe('io_uring');
    expect(flag('-t')).toBe('writeback');
    expect(flag('-c')).toBe('12345');
    expect(flag('-d')).toBe('8');
    expect(flag('-s')).toBe('4096');
    expect(flag('-f')).toBe('raw');
    expect(args).not.toContain('-n'); // native AIO (O_DIRECT), not the page cache
    expect(args).not.toContain('-w');
    expect(args.at(-1)).toBe('/tmp/x.img');
    expect(qemuImgBenchArgs({ ...target, aio: 'threads' }, job, 1)).toContain('threads');
  });

  it('writes with -w and passes a qcow2 format through', () => {
    const args = qemuImgBenchArgs({ ...target, format: 'qcow2' }, { ...job, write: true }, 10);
    expect(args).toContain('-w');
    expect(args[args.indexOf('-f') + 1]).toBe('qcow2');
  });

  it('reads the run time from qemu-img bench output and refuses output without one', () => {
    expect(parseQemuImgBench('Sending 10 read requests, 4096 bytes each, 8 in parallel\nRun completed in 1.398 seconds.\n')).toBe(1.398);
    expect(() => parseQemuImgBench('qemu-img: Could not open x')).toThrow(/no run time/);
  });
});
