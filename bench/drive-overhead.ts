/**
 * Issue #2's scenario: 4 KiB random reads at QD1 and QD32 through a Drive over `file` against
 * bare callback fs.read on an fd (page cache), and through a Drive over `null` against a bare
 * resolved-promise loop, in the same run. Issue #10 adds: `null` without zero-filling (the
 * request path alone, no 4 KiB memset), and a non-binding limit against none on `null`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlockLayer, RealClock, VirtualClock } from '../src/index.js';
import { fmtRate, median, randomOffset as randomOffsetIn, readRate, row, sideBySide } from './util.js';

const FILE_SIZE = 64 * 1024 * 1024;
const BS = 4096;

const randomOffset = () => randomOffsetIn(FILE_SIZE, BS);
const drive = (qd: number, count: number, readOne: (buf: Uint8Array) => Promise<unknown>) => readRate(qd, count, BS, readOne);

export interface DriveOverheadResult {
  [scenario: string]: { subject: number; baseline: number; ratio: number; rounds?: number[]; unit?: string };
}

export async function driveOverheadBench(quick = true): Promise<DriveOverheadResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-bench-'));
  const file = path.join(dir, 'bench.img');
  fs.writeFileSync(file, Buffer.alloc(FILE_SIZE, 0xa5));
  const fd = fs.openSync(file, 'r');
  const layer = new BlockLayer();
  const onFile = await layer.openDrive({ driver: 'file', filename: file, readOnly: true });
  const onNull = await layer.openDrive({ driver: 'null', size: FILE_SIZE });
  const onNullNoFill = await layer.openDrive({ driver: 'null', size: FILE_SIZE, readZeroes: false });
  // Far above what one thread reaches: the limit is checked and charged per request but never holds one back.
  const onNullLimited = await layer.openDrive({ driver: 'null', size: FILE_SIZE, throttle: { iopsTotal: 1e12 } });
  const count = quick ? 100_000 : 400_000;
  const rounds = quick ? 5 : 9;
  const bareRead = (buf: Uint8Array) =>
    new Promise<void>((resolve, reject) => fs.read(fd, buf, 0, BS, randomOffset(), (e) => (e ? reject(e) : resolve())));
  const results: DriveOverheadResult = {};
  console.log('Drive overhead: 4 KiB random reads (IOPS), Drive vs bare calls, medians of alternating rounds (ratio: median of the rounds\' ratios)');
  for (const qd of [1, 32]) {
    const n = qd === 1 ? count / 4 : count;
    // CPU per request (all threads: the thread pool's too) moves far less with the machine's
    // other load than IOPS do, so it is shown next to them.
    const cpu = { subject: [] as number[], baseline: [] as number[] };
    const withCpu = (into: number[], fn: () => Promise<number>) => async () => {
      const start = process.cpuUsage();
      const rate = await fn();
      const u = process.cpuUsage(start);
      into.push((u.user + u.system) / n);
      return rate;
    };
    const r = await sideBySide(
      rounds,
      withCpu(cpu.baseline, () => drive(qd, n, bareRead)),
      withCpu(cpu.subject, () => drive(qd, n, (buf) => onFile.read(randomOffset(), buf))),
    );
    const cs = median(cpu.subject);
    const cb = median(cpu.baseline);
    results[`file-qd${qd}`] = { subject: r.subject, baseline: r.baseline, ratio: r.ratio, rounds: r.rounds };
    results[`file-qd${qd}-cpu`] = { subject: cs, baseline: cb, ratio: cs / cb, unit: 'CPU µs per request (lower is better)' };
    row(`Drive(file) vs fs.read callback, QD${qd}`, fmtRate(r.subject), fmtRate(r.baseline), r.ratio, r.rounds);
    row('  CPU µs per request (all threads)', cs.toFixed(2), cb.toFixed(2), cs / cb);
  }
  if (!quick) {
    // Why Drive(file) trails fs.read at QD32 on the thread pool: the pool's throughput falls
    // with the main thread's time per completion far more than that time itself. The bare loop
    // with half a microsecond of extra main-thread work per completion (what the Drive adds):
    const spin = (ns: number) => {
      const end = process.hrtime.bigint() + BigInt(ns);
      while (process.hrtime.bigint() < end);
    };
    const slowedRead = (buf: Uint8Array) =>
      new Promise<void>((resolve, reject) =>
        fs.read(fd, buf, 0, BS, randomOffset(), (e) => {
          spin(500);
          if (e) reject(e);
          else resolve();
        }),
      );
    const sl = await sideBySide(
      rounds,
      () => drive(32, count, bareRead),
      () => drive(32, count, slowedRead),
    );
    results['file-qd32-main-thread-500ns'] = { subject: sl.subject, baseline: sl.baseline, ratio: sl.ratio, rounds: sl.rounds };
    row('fs.read + 0.5 µs main-thread work vs fs.read, QD32', fmtRate(sl.subject), fmtRate(sl.baseline), sl.ratio, sl.rounds);
  }
  const n = count * 4;
  const r = await sideBySide(
    rounds,
    () => drive(32, n, () => Promise.resolve()),
    () => drive(32, n, (buf) => onNull.read(0, buf)),
  );
  results['null-qd32'] = { subject: r.subject, baseline: r.baseline, ratio: r.ratio, rounds: r.rounds };
  row('Drive(null) vs resolved promise, QD32', fmtRate(r.subject), fmtRate(r.baseline), r.ratio, r.rounds);
  const nf = await sideBySide(
    rounds,
    () => drive(32, n, () => Promise.resolve()),
    () => drive(32, n, (buf) => onNullNoFill.read(0, buf)),
  );
  results['null-nofill-qd32'] = { subject: nf.subject, baseline: nf.baseline, ratio: nf.ratio, rounds: nf.rounds };
  row('Drive(null, readZeroes off) vs promise, QD32', fmtRate(nf.subject), fmtRate(nf.baseline), nf.ratio, nf.rounds);
  // The same drive on a VirtualClock, whose now() is a field read: what the request path costs
  // without its two real clock reads (start and completion, for the latency statistics).
  const virtualLayer = new BlockLayer({ clock: new VirtualClock() });
  const onNullVirtual = await virtualLayer.openDrive({ driver: 'null', size: FILE_SIZE, readZeroes: false });
  const nv = await sideBySide(
    rounds,
    () => drive(32, n, () => Promise.resolve()),
    () => drive(32, n, (buf) => onNullVirtual.read(0, buf)),
  );
  results['null-nofill-virtual-clock-qd32'] = { subject: nv.subject, baseline: nv.baseline, ratio: nv.ratio, rounds: nv.rounds };
  row('  same on a VirtualClock (no clock reads)', fmtRate(nv.subject), fmtRate(nv.baseline), nv.ratio, nv.rounds);
  // A read's promise resolves with its buffer, and V8 looks for a `then` on it (slow on a typed
  // array); the bare promise above resolves with undefined. The same baseline with the buffer:
  const nb = await sideBySide(
    rounds,
    () => drive(32, n, (buf) => Promise.resolve(buf)),
    () => drive(32, n, (buf) => onNullNoFill.read(0, buf)),
  );
  results['null-nofill-vs-buffer-promise-qd32'] = { subject: nb.subject, baseline: nb.baseline, ratio: nb.ratio, rounds: nb.rounds };
  row('  same vs a promise resolved with the buffer', fmtRate(nb.subject), fmtRate(nb.baseline), nb.ratio, nb.rounds);
  // The floor of any layer that answers with the buffer over a driver that answers with a
  // promise: one reaction on the driver's settled promise returning the buffer, and nothing
  // else. The VirtualClock drive (no clock reads) against it: what the Drive's own work costs.
  const settled = Promise.resolve();
  const emptyLayer = (buf: Uint8Array) => settled.then(() => buf);
  const fl = await sideBySide(
    rounds,
    () => drive(32, n, emptyLayer),
    () => drive(32, n, (buf) => onNullVirtual.read(0, buf)),
  );
  results['null-nofill-virtual-clock-vs-empty-layer-qd32'] = { subject: fl.subject, baseline: fl.baseline, ratio: fl.ratio, rounds: fl.rounds };
  row('  VirtualClock drive vs an empty layer', fmtRate(fl.subject), fmtRate(fl.baseline), fl.ratio, fl.rounds);
  console.log('    (empty layer: driverPromise.then(() => buf), the floor of an async layer returning the buffer)');
  await virtualLayer.close();
  const clockNs = clockReadNs();
  results['real-clock-read'] = { subject: clockNs, baseline: clockNs, ratio: 1, unit: 'ns per RealClock.now()' };
  console.log(`  one RealClock.now() costs ${clockNs.toFixed(0)} ns here; a request reads it twice`);
  const lim = await sideBySide(
    rounds,
    () => drive(32, n, (buf) => onNull.read(0, buf)),
    () => drive(32, n, (buf) => onNullLimited.read(0, buf)),
  );
  results['null-limit-qd32'] = { subject: lim.subject, baseline: lim.baseline, ratio: lim.ratio, rounds: lim.rounds };
  row('Drive(null) non-binding limit vs none, QD32', fmtRate(lim.subject), fmtRate(lim.baseline), lim.ratio, lim.rounds);
  await layer.close();
  fs.closeSync(fd);
  fs.rmSync(dir, { recursive: true, force: true });
  return results;
}

/** ns per RealClock.now() (median of 5 runs of a million reads). */
function clockReadNs(): number {
  const clock = new RealClock();
  const runs: number[] = [];
  let sink = 0;
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 1e6; i++) sink += clock.now() & 1;
    runs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  if (sink < 0) console.log(sink); // keeps the loop from being optimized away
  return median(runs);
}

if (import.meta.url === `file://${process.argv[1]}`) await driveOverheadBench(!process.argv.includes('--full'));
