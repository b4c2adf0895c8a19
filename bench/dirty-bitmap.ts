/**
 * Dirty bitmaps (#23): what recording costs on the write path, and how fast a backup walks a
 * huge sparse bitmap.
 * - 4 KiB random writes QD16 through a Drive with one recording bitmap vs the same drive with
 *   none, alternating rounds in the same run: on `file` (page cache) and on `null` (the request
 *   path alone, where the bitmap's share is largest). Goal: ≥ 0.97.
 * - Walking the dirty extents of a 16 TiB disk's bitmap (64 KiB granules) with 10,000 scattered
 *   dirty granules, vs the goal of 50 ms; the bitmap's memory vs 16 MiB.
 *
 *   node --expose-gc --import tsx bench/dirty-bitmap.ts [--rounds N]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlockLayer, type Drive } from '../src/index.js';
import { fmtRate, median, randomOffset, row, sideBySide } from './util.js';

const BS = 4096;
const FILE_SIZE = 64 * 2 ** 20;

/** Writes per wall-clock second; the rate per CPU second of the process (load-independent) goes to `cpuRates`. */
async function writeRate(drive: Drive, qd: number, count: number, cpuRates?: number[]): Promise<number> {
  let issued = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: qd }, async () => {
      const buf = new Uint8Array(BS);
      while (issued < count) {
        issued++;
        await drive.write(randomOffset(FILE_SIZE, BS), buf);
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  cpuRates?.push(count / ((cpu.user + cpu.system) / 1e6));
  return count / wall;
}

/** Rate with a recording bitmap (subject) against none (baseline), on one drive. */
async function recordingCost(drive: Drive, rounds: number, count: number) {
  const cpuWithout: number[] = [];
  const cpuWith: number[] = [];
  const without = () => writeRate(drive, 16, count, cpuWithout);
  const withBitmap = async () => {
    drive.addDirtyBitmap('bench', { granularity: 65536 });
    try {
      return await writeRate(drive, 16, count, cpuWith);
    } finally {
      await drive.removeDirtyBitmap('bench');
    }
  };
  await writeRate(drive, 16, count / 4); // warm up
  const wall = await sideBySide(rounds, without, withBitmap);
  const cpuRatios = cpuWith.map((x, i) => x / cpuWithout[i]!).sort((x, y) => x - y);
  return { ...wall, cpu: { subject: median(cpuWith), baseline: median(cpuWithout), ratio: median(cpuRatios), rounds: cpuRatios } };
}

export interface DirtyBitmapBenchResult {
  [scenario: string]: { subject: number; baseline: number; ratio: number; rounds?: number[]; unit?: string };
}

export async function dirtyBitmapBench(quick = true): Promise<DirtyBitmapBenchResult> {
  const roundsArg = process.argv.indexOf('--rounds');
  const rounds = roundsArg > 0 ? Number(process.argv[roundsArg + 1]) : quick ? 7 : 11;
  const results: DirtyBitmapBenchResult = {};
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-bench-bitmap-'));
  const file = path.join(dir, 'disk.img');
  fs.writeFileSync(file, Buffer.alloc(FILE_SIZE));
  const layer = new BlockLayer();
  try {
    console.log('Dirty bitmaps: 4 KiB random writes QD16 (IOPS), with one recording bitmap vs none, same drive, alternating rounds');
    for (const [name, options] of [
      ['file', { driver: 'file', filename: file }],
      ['null', { driver: 'null', size: FILE_SIZE }],
    ] as const) {
      const drive = await layer.openDrive(options);
      const r = await recordingCost(drive, rounds, name === 'null' ? 200_000 : 50_000);
      row(`${name}: with bitmap vs without`, fmtRate(r.subject), fmtRate(r.baseline), r.ratio, r.rounds);
      row(`${name}: the same per CPU second`, fmtRate(r.cpu.subject), fmtRate(r.cpu.baseline), r.cpu.ratio, r.cpu.rounds);
      results[`record-${name}`] = { subject: r.subject, baseline: r.baseline, ratio: r.ratio, rounds: r.rounds };
      results[`record-${name}-cpu`] = { ...r.cpu, unit: 'writes per CPU second of the process' };
      await drive.close();
    }

    const huge = await layer.openDrive({ driver: 'null', size: 16 * 2 ** 40 });
    huge.addDirtyBitmap('walk', { granularity: 65536 });
    const granules = (16 * 2 ** 40) / 65536;
    const stride = Math.floor(granules / 10_000);
    const one = new Uint8Array(512);
    for (let i = 0; i < 10_000; i++) await huge.write((i * stride + (i % 7)) * 65536, one);
    const times: number[] = [];
    let extents = 0;
    for (let i = 0; i < rounds; i++) {
      const t0 = performance.now();
      extents = 0;
      for await (const _ of huge.dirtyExtents('walk')) extents++;
      times.push(performance.now() - t0);
    }
    const ms = median(times);
    const bytes = huge.bitmapNode.bitmaps.get('walk').granules.pageBytes;
    console.log(`  walk 16 TiB, ${extents} dirty extents: ${ms.toFixed(1)} ms (goal ≤ 50 ms); bitmap pages ${(bytes / 2 ** 20).toFixed(2)} MiB (goal < 16 MiB)`);
    results['walk-16TiB-ms'] = { subject: ms, baseline: 50, ratio: ms / 50, unit: 'ms against the 50 ms goal (lower is better)' };
    results['walk-16TiB-memory'] = { subject: bytes, baseline: 16 * 2 ** 20, ratio: bytes / (16 * 2 ** 20), unit: 'bytes against 16 MiB (lower is better)' };
    await huge.close();
  } finally {
    await layer.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) await dirtyBitmapBench(!process.argv.includes('--full'));
