import { execFileSync, spawnSync } from 'node:child_process';
import type { BenchResult } from '../bench/report.js';
import type { AioEngine } from '../drivers/file/engine.js';
import { BlockError } from '../errors.js';

/** What `--compare` measured with the other tool, or why it did not run. */
export type Compared = { tool: string; iops: number; args: string[] } | { skipped: string };

/** What the equivalent run needs to know about our job's target. */
export interface CompareTarget {
  filename: string;
  /** Image format of the target ('raw', 'qcow2'), as qemu-img's -f. */
  format: string;
  /** The file engine our job used, so the other tool uses the same one. */
  aio: AioEngine;
}

/**
 * Arguments of `qemu-img bench` doing what our job did: the same file and format, the same
 * request count, size and depth, sequential from offset 0 with a step of one request
 * (its default, as our sequential cursor), the page cache (`-t writeback`, its default,
 * spelled out; `-n` would be native AIO, which needs O_DIRECT) and the same engine
 * (`-i threads|io_uring`, its default being threads whatever we ran).
 */
export function qemuImgBenchArgs(t: CompareTarget, job: { bs: number; iodepth: number; write: boolean }, count: number): string[] {
  return [
    'bench',
    '-f',
    t.format,
    '-t',
    'writeback',
    '-i',
    t.aio,
    '-c',
    String(count),
    '-d',
    String(job.iodepth),
    '-s',
    String(job.bs),
    ...(job.write ? ['-w'] : []),
    t.filename,
  ];
}

/** Arguments of the equivalent fio job (always its io_uring engine, its fastest for buffered files). */
export function fioArgs(filename: string, j: { rw: string; bs: number; iodepth: number; runtime?: number; rwmixread: number }): string[] {
  // --invalidate=0: by default fio drops the file's cached pages first, so it would start cold
  // where our job just ran warm. (libaio degrades to synchronous on buffered I/O.)
  return [
    '--name=blocklayer',
    `--filename=${filename}`,
    `--rw=${j.rw}`,
    `--bs=${j.bs}`,
    `--iodepth=${j.iodepth}`,
    '--ioengine=io_uring',
    '--invalidate=0',
    `--rwmixread=${j.rwmixread}`,
    `--runtime=${j.runtime ?? 5}`,
    '--time_based',
    '--output-format=json',
  ];
}

/** Seconds of qemu-img bench's request loop ("Run completed in N seconds."). */
export function parseQemuImgBench(out: string): number {
  const secs = Number(/Run completed in ([\d.]+) seconds/.exec(out)?.[1]);
  if (!(secs > 0)) throw new BlockError('EIO', `qemu-img bench: no run time in its output: ${out.trim().split('\n').pop() ?? ''}`);
  return secs;
}

/** Runs the equivalent fio job or qemu-img bench on the same file, after our job. */
export function compare(tool: string, target: CompareTarget | undefined, r: BenchResult): Compared {
  if (tool !== 'fio' && tool !== 'qemu-img') throw new BlockError('EINVAL', `--compare: '${tool}' is not fio or qemu-img`, { field: 'compare' });
  if (target === undefined) throw new BlockError('EINVAL', '--compare needs a file target (--filename or --drive file=…)', { field: 'compare' });
  const j = r.job as { rw: string; bs: number; iodepth: number; runtime?: number; rwmixread: number };
  const has = spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0;
  if (!has) return { skipped: `${tool} is not installed (apt-get install ${tool === 'fio' ? 'fio' : 'qemu-utils'})` };
  if (tool === 'fio') {
    const args = fioArgs(target.filename, j);
    const job = JSON.parse(execFileSync('fio', args, { encoding: 'utf8' })).jobs[0];
    return { tool, iops: job.read.iops + job.write.iops, args };
  }
  if (j.rw !== 'read' && j.rw !== 'write') return { skipped: 'qemu-img bench does sequential read or write only (use --rw read or --rw write)' };
  // The same number of requests as our job completed; both report requests per second of the request loop.
  const count = Math.max(1, r.total.ops);
  const args = qemuImgBenchArgs(target, { bs: j.bs, iodepth: j.iodepth, write: j.rw === 'write' }, count);
  const secs = parseQemuImgBench(execFileSync('qemu-img', args, { encoding: 'utf8' }));
  return { tool, iops: count / secs, args };
}
