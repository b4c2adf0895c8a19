/**
 * 4 KiB random reads at QD16 through a Drive on each of the other formats (vpc dynamic, vmdk
 * monolithicSparse and streamOptimized, vhdx dynamic, vdi dynamic) vs `qemu-img bench -f FMT
 * -d 16 -s 4k -t writeback -i threads` on the same image, in the same run (alternating rounds,
 * median of paired ratios, their range). The images (made by `qemu-img convert` from one raw
 * file, half of its MiBs random data, half holes; a raw copy as a reference row) have their files read once before the rounds,
 * so the page cache is warm for both sides.
 *
 * The pattern is the same on both sides: qemu-img bench reads at offsets stepping by `-S`,
 * wrapped modulo the image size (QEMU 7.2's rule); a step of an odd number of 4 KiB blocks
 * (about 158 MiB) visits every block of the image in a scattered order, and ours walks that very
 * sequence, the next offset handed to whichever of the 16 workers is free, as qemu-img's
 * completions do. Rates count only the request loop on both sides (qemu-img's "Run completed"
 * time; ours from the first request to the last). CPU per request: ours process.cpuUsage()
 * over the loop, qemu-img's whole process (user + system, through /usr/bin/time; its start-up
 * and open are included, a small share at these counts).
 *
 * `npx tsx bench/formats-read.ts [MiB] [rounds] [format…]` runs it alone (MiB default 1024).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlockLayer } from '../src/index.js';
import { fmtRate, median, row } from './util.js';

const BS = 4096;
const QD = 16;
/** The offset step: an odd number of blocks, so the walk visits every block of a power-of-two image once per lap. */
const STEP = 40503 * BS;

interface Case {
  name: string;
  format: string;
  options: string[];
  /** Requests per round (a streamOptimized read inflates a whole grain, so it runs fewer). */
  count: number;
}

const CASES: Case[] = [
  // The same data as a raw file: what the Drive and file driver cost without a format, on both sides.
  { name: 'raw reference', format: 'raw', options: [], count: 200_000 },
  { name: 'vpc dynamic', format: 'vpc', options: ['-o', 'subformat=dynamic'], count: 200_000 },
  { name: 'vmdk monolithicSparse', format: 'vmdk', options: ['-o', 'subformat=monolithicSparse'], count: 200_000 },
  { name: 'vmdk streamOptimized', format: 'vmdk', options: ['-o', 'subformat=streamOptimized'], count: 20_000 },
  { name: 'vhdx dynamic', format: 'vhdx', options: ['-o', 'subformat=dynamic'], count: 200_000 },
  { name: 'vdi dynamic', format: 'vdi', options: ['-o', 'static=off'], count: 200_000 },
];

interface Sample {
  iops: number;
  cpuUsPerReq: number;
}

function qemuBench(c: Case, image: string): Sample {
  const args = ['bench', '-f', c.format, '-c', String(c.count), '-d', String(QD), '-s', String(BS), '-S', String(STEP), '-t', 'writeback', '-i', 'threads', image];
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', 'qemu-img', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(' ')} failed: ${r.stderr}`);
  const secs = Number(/Run completed in ([\d.]+) seconds/.exec(r.stdout)?.[1]);
  const [u, s] = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
  return { iops: c.count / secs, cpuUsPerReq: ((u + s) * 1e6) / c.count };
}

async function ourBench(c: Case, image: string): Promise<Sample> {
  const layer = new BlockLayer();
  try {
    const d = await layer.openDrive({ driver: c.format, readOnly: true, file: { driver: 'file', filename: image } } as never);
    const size = d.length;
    let next = 0;
    let issued = 0;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: QD }, async () => {
        const buf = Buffer.allocUnsafe(BS);
        while (issued < c.count) {
          issued++;
          const at = next;
          next = (next + STEP) % size;
          await d.read(at, buf);
        }
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(c0);
    return { iops: c.count / secs, cpuUsPerReq: (cpu.user + cpu.system) / c.count };
  } finally {
    await layer.close();
  }
}

/** `mib` MiB, every other MiB random data (the rest holes). */
function makeRaw(file: string, mib: number): void {
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, mib << 20);
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let m = 0; m < mib; m += 2) fs.writeSync(fd, crypto.randomFillSync(buf), 0, buf.length, m << 20);
  fs.closeSync(fd);
}

/** Reads a file once through, so its pages are cached. */
function warm(file: string): void {
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(4 << 20);
  while (fs.readSync(fd, buf) > 0);
  fs.closeSync(fd);
}

export async function formatsReadBench(mib = 1024, rounds = 3, only?: string[]): Promise<Record<string, unknown>> {
  if (spawnSync('qemu-img', ['--version']).status !== 0 || !fs.existsSync('/usr/bin/time')) {
    console.log('formats read: skipped (needs qemu-img and /usr/bin/time)');
    return { skipped: true };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-formats-read-'));
  const p = (f: string) => path.join(dir, f);
  const results: Record<string, unknown> = { mib, qd: QD, bs: BS, step: STEP };
  try {
    makeRaw(p('half.raw'), mib);
    console.log(`formats read: 4 KiB reads at QD${QD}, offsets stepping ${STEP / BS} blocks (scattered), ${mib} MiB images half random data, Drive vs qemu-img bench -i threads -t writeback (IOPS; ratio > 1 is faster)`);
    for (const c of CASES) {
      if (only && only.length > 0 && !only.some((o) => c.name.replace(' ', '-').includes(o))) continue;
      const image = p(`${c.name.replace(' ', '-')}.${c.format}`);
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', c.format, ...c.options, p('half.raw'), image]);
      warm(image);
      const q: Sample[] = [];
      const o: Sample[] = [];
      for (let i = 0; i < rounds; i++) {
        if (i % 2 === 0) {
          q.push(qemuBench(c, image));
          o.push(await ourBench(c, image));
        } else {
          o.push(await ourBench(c, image));
          q.push(qemuBench(c, image));
        }
      }
      const ratios = o.map((s, i) => s.iops / q[i].iops).sort((a, b) => a - b);
      const cpuRatios = o.map((s, i) => q[i].cpuUsPerReq / s.cpuUsPerReq).sort((a, b) => a - b);
      row(`${c.name} (IOPS)`, fmtRate(median(o.map((s) => s.iops))), fmtRate(median(q.map((s) => s.iops))), median(ratios), ratios);
      row(`${c.name} (CPU µs/req)`, median(o.map((s) => s.cpuUsPerReq)).toFixed(1), median(q.map((s) => s.cpuUsPerReq)).toFixed(1), median(cpuRatios), cpuRatios);
      results[c.name] = { ratio: median(ratios), rounds: ratios, cpuRatio: median(cpuRatios), cpuRounds: cpuRatios, ours: o, qemu: q };
      fs.rmSync(image, { force: true });
    }
    return results;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await formatsReadBench(Number(process.argv[2] ?? 1024), Number(process.argv[3] ?? 3), process.argv.slice(4));
