/**
 * qcow2 write speed, ours vs `qemu-img bench -w` with the same parameters on an identical image,
 * in the same run: 4 KiB writes at QD16 into a fresh image (a step of one cluster: every write
 * allocates), the same into a fully allocated image (in place), and 1 MiB sequential writes.
 * The pattern is qemu-img bench's: request i at offset (i * step) mod size, `depth` in flight,
 * a buffer of zeros; timed from the first request to the last completion (open and close excluded on both sides).
 *
 *   npx tsx bench/qcow2-write.ts [--rounds N]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convertCommand } from '../src/cli/convert.js';
import { BlockLayer } from '../src/index.js';
import { fmtRate, row, sideBySide } from './util.js';

interface Scenario {
  label: string;
  /** Image size (bytes). */
  size: number;
  count: number;
  depth: number;
  bs: number;
  step: number;
  /** qemu-img create -o options (e.g. preallocation=metadata for the in-place case). */
  createOptions: string[];
}

const MIB = 1024 * 1024;
const SCENARIOS: Scenario[] = [
  { label: '4 KiB writes QD16, fresh image (each allocates)', size: 1024 * MIB, count: 16384, depth: 16, bs: 4096, step: 65536, createOptions: [] },
  { label: '4 KiB writes QD16, allocated image (in place)', size: 1024 * MIB, count: 16384, depth: 16, bs: 4096, step: 65536, createOptions: ['-o', 'preallocation=metadata'] },
  { label: '1 MiB sequential writes QD16, fresh image', size: 512 * MIB, count: 512, depth: 16, bs: MIB, step: MIB, createOptions: [] },
];

function freshImage(dir: string, name: string, s: Scenario): string {
  const file = path.join(dir, name);
  fs.rmSync(file, { force: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...s.createOptions, file, String(s.size)]);
  return file;
}

type Aio = 'threads' | 'io_uring';

/** qemu-img bench's own figure ("Run completed in X seconds"), as requests per second. */
function qemuImgBench(file: string, s: Scenario, aio: Aio): number {
  const out = execFileSync('qemu-img', ['bench', '-w', '-f', 'qcow2', '-i', aio, '-c', String(s.count), '-d', String(s.depth), '-s', String(s.bs), '-S', String(s.step), file], {
    encoding: 'utf8',
  });
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  if (!m) throw new Error(`qemu-img bench: unexpected output: ${out}`);
  return s.count / Number(m[1]);
}

/** The same pattern through a blocklayer drive: `depth` workers share one request counter. */
async function ourBench(file: string, s: Scenario, aio: Aio): Promise<number> {
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file, aio } });
  const buf = new Uint8Array(s.bs);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: s.depth }, async () => {
      while (next < s.count) {
        const i = next++;
        await drive.write((i * s.step) % s.size, buf);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await layer.close();
  return s.count / seconds;
}

/** `blocklayer convert -O qcow2 [-c]` vs `qemu-img convert -O qcow2 [-c]` of a 256 MiB raw image with data in most of it (MB/s of guest data). */
async function convertBench(dir: string, rounds: number): Promise<Record<string, unknown>> {
  const src = path.join(dir, 'src.raw');
  const size = 256 * MIB;
  // Compressible but not trivial data: text-like runs, with a few holes.
  const fd = fs.openSync(src, 'w');
  fs.ftruncateSync(fd, size);
  const chunk = Buffer.alloc(MIB);
  for (let mib = 0; mib < 256; mib++) {
    if (mib % 16 === 7) continue;
    for (let i = 0; i < chunk.length; i++) chunk[i] = 97 + ((i * 7 + mib * 13 + (i >> 9)) % 23);
    fs.writeSync(fd, chunk, 0, chunk.length, mib * MIB);
  }
  fs.closeSync(fd);
  const out = path.join(dir, 'out.qcow2');
  const rate = (t0: number) => (size / 1e6) / ((performance.now() - t0) / 1000);
  const results: Record<string, unknown> = {};
  // qemu-img as a process (its start-up is a few ms), ours in this process: the same work without Node's start-up.
  // Ours fsyncs the new image before renaming it into place (a crash never leaves a complete-looking
  // partial file); qemu-img's default cache mode for convert, unsafe, skips that. So the baseline is
  // qemu-img with -t writeback (flushed at the end, like ours); the unsafe default is printed too.
  for (const compress of [false, true]) {
    const c = compress ? ['-c'] : [];
    const qemu = (cache: string) => async () => {
      fs.rmSync(out, { force: true });
      const t0 = performance.now();
      execFileSync('qemu-img', ['convert', '-t', cache, '-f', 'raw', '-O', 'qcow2', ...c, src, out]);
      return rate(t0);
    };
    const ours = async () => {
      fs.rmSync(out, { force: true });
      const t0 = performance.now();
      await convertCommand(['-q', '-f', 'raw', '-O', 'qcow2', ...c, src, out]);
      return rate(t0);
    };
    const label = `convert raw -> qcow2${compress ? ' -c (zlib)' : ''}, 256 MiB`;
    const r = await sideBySide(rounds, qemu('writeback'), ours);
    results[label] = r;
    row(`${label} (qemu-img -t writeback)`, `${fmtRate(r.subject)} MB/s`, `${fmtRate(r.baseline)} MB/s`, r.ratio, r.rounds);
    const u = await sideBySide(rounds, qemu('unsafe'), ours);
    results[`${label}, vs qemu-img's default -t unsafe`] = u;
    row(`${label} (qemu-img default, -t unsafe)`, `${fmtRate(u.subject)} MB/s`, `${fmtRate(u.baseline)} MB/s`, u.ratio);
  }
  return results;
}

export async function qcow2WriteBench(rounds = 3): Promise<Record<string, unknown>> {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
  } catch {
    console.log('qcow2 write: skipped (qemu-img not installed)');
    return { skipped: true };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-write-bench-'));
  const results: Record<string, unknown> = {};
  console.log(`qcow2 write: requests/s, ours vs qemu-img bench -w (same image kind and pattern, medians of ${rounds} alternating rounds)`);
  try {
    for (const aio of ['threads', 'io_uring'] as const) {
      for (const s of SCENARIOS) {
        const r = await sideBySide(
          rounds,
          async () => qemuImgBench(freshImage(dir, 'theirs.qcow2', s), s, aio),
          async () => ourBench(freshImage(dir, 'ours.qcow2', s), s, aio),
        );
        results[`${s.label}, aio=${aio}`] = r;
        row(`${s.label}, aio=${aio}`, `${fmtRate(r.subject)}/s`, `${fmtRate(r.baseline)}/s`, r.ratio, r.rounds);
      }
    }
    results.convert = await convertBench(dir, rounds);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--rounds');
  await qcow2WriteBench(i > 0 ? Number(process.argv[i + 1]) : 3);
}
