/**
 * Issue #10's sequential-read scenario: `blocklayer bench` (runJob, the CLI's job runner) vs
 * `qemu-img bench` on the same page-cached raw file, 4 KiB sequential reads at QD8, each
 * engine against the same engine of qemu-img (threads vs `-i threads`, io_uring vs `-i
 * io_uring`), the page cache on both sides (`-t writeback`), the same request count, both
 * timing only the request loop. Medians of alternating rounds; CPU time per request (user +
 * system, all threads of the process) is printed as well, as it moves less than the rate on
 * a busy machine.
 *
 * Run alone: `node --import tsx bench/seq-read.ts [--full]`.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { runJob } from '../src/bench/runner.js';
import { parseQemuImgBench, qemuImgBenchArgs } from '../src/cli/bench-compare.js';
import { type AioEngine, selectEngine } from '../src/drivers/file/engine.js';
import { fmtRate, median, row } from './util.js';

const run = promisify(execFile);
const FILE_SIZE = 256 * 1024 * 1024;
const BS = 4096;
const QD = 8;

interface Sample {
  iops: number;
  cpuUsPerReq: number;
}

/** qemu-img bench; its CPU time is bash's `times` for its children (user + system, all threads). */
async function qemuImg(file: string, aio: AioEngine, count: number): Promise<Sample> {
  const args = qemuImgBenchArgs({ filename: file, format: 'raw', aio }, { bs: BS, iodepth: QD, write: false }, count);
  const { stdout } = await run('bash', ['-c', 'qemu-img "$@" && times', 'bash', ...args]);
  // `times` prints the shell's user/system times, then its children's: "0m0.530s 0m1.840s".
  const children = stdout.trim().split('\n').pop() ?? '';
  const secs = [...children.matchAll(/(\d+)m([\d.]+)s/g)].reduce((t, m) => t + Number(m[1]) * 60 + Number(m[2]), 0);
  return { iops: count / parseQemuImgBench(stdout), cpuUsPerReq: (secs * 1e6) / count };
}

/** Our job runner, size-bound to the same request count. */
async function ours(file: string, aio: AioEngine, count: number): Promise<Sample> {
  const c0 = process.cpuUsage();
  const r = await runJob({ target: { driver: 'raw', file: { driver: 'file', filename: file, aio } }, rw: 'read', bs: BS, iodepth: QD, size: count * BS });
  const c = process.cpuUsage(c0);
  return { iops: r.total.iops, cpuUsPerReq: (c.user + c.system) / r.total.ops };
}

export async function seqReadBench(quick = !process.argv.includes('--full')): Promise<Record<string, unknown>> {
  try {
    await run('qemu-img', ['--version']);
  } catch {
    console.log('sequential read vs qemu-img bench: skipped (qemu-img not installed: apt-get install qemu-utils)');
    return { skipped: 'qemu-img not installed' };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-seq-bench-'));
  const file = path.join(dir, 'seq.img');
  fs.writeFileSync(file, Buffer.alloc(FILE_SIZE, 0x5a)); // fully allocated, in the page cache
  const count = quick ? 100_000 : 400_000;
  const rounds = quick ? 5 : 9;
  const results: Record<string, unknown> = { loadBefore: os.loadavg(), count, rounds };
  console.log(
    `sequential reads: ${BS / 1024} KiB QD${QD}, ${count} requests on a page-cached ${FILE_SIZE >> 20} MiB raw file, blocklayer bench vs qemu-img bench (same engine, -t writeback), median of ${rounds} alternating rounds`,
  );
  console.log(`  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} on ${os.cpus().length} CPUs`);
  try {
    for (const aio of ['threads', 'io_uring'] as const) {
      // Where io_uring is unavailable our file driver falls back to threads; compare like with like.
      const engine = selectEngine(aio).name;
      if (engine !== aio) {
        console.log(`  ${aio}: skipped (unavailable here)`);
        continue;
      }
      const q: Sample[] = [];
      const b: Sample[] = [];
      for (let i = 0; i < rounds; i++) {
        // Alternate the order so neither side always runs on a warmer or cooler machine.
        if (i % 2 === 0) {
          q.push(await qemuImg(file, aio, count));
          b.push(await ours(file, aio, count));
        } else {
          b.push(await ours(file, aio, count));
          q.push(await qemuImg(file, aio, count));
        }
      }
      const qi = median(q.map((s) => s.iops));
      const bi = median(b.map((s) => s.iops));
      const qc = median(q.map((s) => s.cpuUsPerReq));
      const bc = median(b.map((s) => s.cpuUsPerReq));
      results[aio] = { blocklayer: bi, qemuImg: qi, ratio: bi / qi, cpuUsPerReq: { blocklayer: bc, qemuImg: qc }, rounds: { blocklayer: b, qemuImg: q } };
      row(`seq read QD${QD} ${aio}: blocklayer vs qemu-img`, fmtRate(bi), fmtRate(qi), bi / qi);
      console.log(`  ${''.padEnd(46)} CPU ${bc.toFixed(2)} µs/req vs ${qc.toFixed(2)} µs/req (qemu-img/blocklayer ${(qc / bc).toFixed(3)})`);
    }
    results.loadAfter = os.loadavg();
    console.log(`  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} after`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) await seqReadBench();
