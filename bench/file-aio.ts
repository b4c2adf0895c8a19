/**
 * Issue #10's first scenario: the file driver's engines side by side, 4 KiB random reads on a
 * page-cached file. Drive(file, aio io_uring) vs Drive(file, aio threads) at QD32 and QD1, the
 * bare engines (callback fs.read vs the ring, no Drive) at QD32, and fio's io_uring and psync
 * engines on the same file as references. Medians of alternating rounds; the load average is
 * printed because the figures depend on what else the machine runs.
 *
 * Run alone: `node --expose-gc --import tsx bench/file-aio.ts [--full]`.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { sharedUring } from '../src/drivers/file/uring.js';
import { BlockLayer } from '../src/index.js';
import { fmtRate, median, randomOffset as randomOffsetIn, readRate, row, sideBySide } from './util.js';

const run = promisify(execFile);
const FILE_SIZE = 64 * 1024 * 1024;
const BS = 4096;

const randomOffset = () => randomOffsetIn(FILE_SIZE, BS);
const drive = (qd: number, count: number, readOne: (buf: Uint8Array) => Promise<unknown>) => readRate(qd, count, BS, readOne);

/** fio 4 KiB random reads on `file` with `engine`; IOPS. */
async function fio(file: string, engine: string, iodepth: number, seconds: number): Promise<number> {
  const { stdout } = await run('fio', [
    '--name=aio',
    `--filename=${file}`,
    '--rw=randread',
    `--bs=${BS}`,
    `--ioengine=${engine}`,
    `--iodepth=${iodepth}`,
    `--runtime=${seconds}`,
    '--time_based',
    '--invalidate=0', // keep the page cache (fio drops the file's cached pages by default)
    '--output-format=json',
  ]);
  return (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: { read: { iops: number } }[] }).jobs[0].read.iops;
}

export async function fileAioBench(quick = !process.argv.includes('--full')): Promise<Record<string, unknown>> {
  const ring = sharedUring();
  if (typeof ring === 'string') {
    console.log(`file aio: skipped (${ring})`);
    return { skipped: ring };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-aio-bench-'));
  const file = path.join(dir, 'bench.img');
  fs.writeFileSync(file, Buffer.alloc(FILE_SIZE, 0xa5)); // fully allocated, in the page cache
  const fd = fs.openSync(file, 'r');
  const layer = new BlockLayer();
  const threads = await layer.openDrive({ driver: 'file', filename: file, readOnly: true, aio: 'threads' });
  const uring = await layer.openDrive({ driver: 'file', filename: file, readOnly: true, aio: 'io_uring' });
  const count = quick ? 100_000 : 400_000;
  const rounds = quick ? 5 : 9;
  const results: Record<string, unknown> = { loadBefore: os.loadavg() };
  console.log(`file aio: 4 KiB random reads (IOPS) on a page-cached ${FILE_SIZE >> 20} MiB file, io_uring vs threads, median of ${rounds} alternating rounds`);
  console.log(`  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} on ${os.cpus().length} CPUs`);
  try {
    for (const qd of [32, 1]) {
      const n = qd === 1 ? count / 4 : count;
      const r = await sideBySide(
        rounds,
        () => drive(qd, n, (buf) => threads.read(randomOffset(), buf)),
        () => drive(qd, n, (buf) => uring.read(randomOffset(), buf)),
      );
      results[`drive-qd${qd}`] = { subject: r.subject, baseline: r.baseline, ratio: r.ratio, rounds: r.rounds };
      row(`Drive(file) io_uring vs threads, QD${qd}`, fmtRate(r.subject), fmtRate(r.baseline), r.ratio, r.rounds);
    }
    const bareThreads = (buf: Uint8Array) =>
      new Promise<void>((resolve, reject) => fs.read(fd, buf, 0, BS, randomOffset(), (e) => (e ? reject(e) : resolve())));
    const bareRing = (buf: Uint8Array) =>
      new Promise<void>((resolve, reject) =>
        ring.read(fd, buf, 0, BS, randomOffset(), (res) => (res < 0 ? reject(new Error(`read: ${res}`)) : resolve())),
      );
    const r = await sideBySide(rounds, () => drive(32, count, bareThreads), () => drive(32, count, bareRing));
    results['bare-qd32'] = { subject: r.subject, baseline: r.baseline, ratio: r.ratio, rounds: r.rounds };
    row('bare ring vs bare fs.read callback, QD32', fmtRate(r.subject), fmtRate(r.baseline), r.ratio, r.rounds);

    let haveFio = true;
    try {
      await run('fio', ['--version']);
    } catch {
      haveFio = false;
      console.log('  fio: skipped (not installed)');
    }
    if (haveFio) {
      const seconds = quick ? 2 : 4;
      const fioRounds = quick ? 1 : 3;
      const uringRuns: number[] = [];
      const psyncRuns: number[] = [];
      for (let i = 0; i < fioRounds; i++) {
        uringRuns.push(await fio(file, 'io_uring', 32, seconds));
        psyncRuns.push(await fio(file, 'psync', 1, seconds));
      }
      const fioUring = median(uringRuns);
      const fioPsync = median(psyncRuns);
      results.fio = { io_uring: fioUring, psync: fioPsync };
      const ours = (results['drive-qd32'] as { subject: number }).subject;
      row('Drive(file) io_uring QD32 vs fio io_uring QD32', fmtRate(ours), fmtRate(fioUring), ours / fioUring);
      row('Drive(file) io_uring QD32 vs fio psync (1 thread)', fmtRate(ours), fmtRate(fioPsync), ours / fioPsync);
    }
    results.loadAfter = os.loadavg();
    console.log(`  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} after`);
  } finally {
    await layer.close();
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) await fileAioBench();
