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

/** qemu-img bench's own figure ("Run completed in X seconds"), as requests per second. */
function qemuImgBench(file: string, s: Scenario): number {
  const out = execFileSync('qemu-img', ['bench', '-w', '-f', 'qcow2', '-c', String(s.count), '-d', String(s.depth), '-s', String(s.bs), '-S', String(s.step), file], {
    encoding: 'utf8',
  });
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  if (!m) throw new Error(`qemu-img bench: unexpected output: ${out}`);
  return s.count / Number(m[1]);
}

/** The same pattern through a blocklayer drive: `depth` workers share one request counter. */
async function ourBench(file: string, s: Scenario): Promise<number> {
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } });
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
    for (const s of SCENARIOS) {
      const r = await sideBySide(
        rounds,
        async () => qemuImgBench(freshImage(dir, 'theirs.qcow2', s), s),
        async () => ourBench(freshImage(dir, 'ours.qcow2', s), s),
      );
      results[s.label] = r;
      row(s.label, `${fmtRate(r.subject)}/s`, `${fmtRate(r.baseline)}/s`, r.ratio);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--rounds');
  await qcow2WriteBench(i > 0 ? Number(process.argv[i + 1]) : 3);
}
