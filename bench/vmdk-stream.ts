/**
 * raw → VMDK streamOptimized: `convertImage` in process vs `qemu-img convert -O vmdk -o
 * subformat=streamOptimized` (qemu-img's default output cache, one flush at the end; ours
 * flushes as its driver does), alternating rounds, median of paired ratios. The input has, per
 * 4 MiB, a MiB of random data, a MiB of text, a MiB of a short repeating pattern and a hole, so
 * deflate meets both compressible and incompressible grains. Each row prints wall time and CPU
 * time (ours: process.cpuUsage(), so the thread pool's deflates count; qemu-img's through
 * /usr/bin/time). Every output is checked with `qemu-img compare` against the input.
 * `npx tsx bench/vmdk-stream.ts [MiB] [rounds]` runs it alone.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convertImage } from '../src/index.js';
import { median, row, sideBySide } from './util.js';

interface Cost {
  wall: number;
  cpu: number;
}

function makeInput(file: string, mib: number): void {
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, mib << 20);
  const mb = 1 << 20;
  const text = Buffer.alloc(mb);
  for (let i = 0, n = 0; i < mb; n++) i += text.write(`line ${n}: the quick brown fox jumps over the lazy dog ${n * 7919}\n`, i);
  const pattern = Buffer.alloc(mb);
  for (let i = 0; i < mb; i++) pattern[i] = (i * 7) % 251;
  for (let m = 0; m < mib; m++) {
    const kind = m % 4;
    if (kind === 3) continue;
    fs.writeSync(fd, kind === 0 ? crypto.randomBytes(mb) : kind === 1 ? text : pattern, 0, mb, m * mb);
  }
  fs.closeSync(fd);
}

function qemuConvert(input: string, out: string): Cost {
  fs.rmSync(out, { force: true });
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', 'qemu-img', 'convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', input, out], { encoding: 'utf8' });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`qemu-img convert failed: ${r.stderr}`);
  const [u, s] = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
  return { wall, cpu: u + s };
}

async function ourConvert(input: string, out: string): Promise<Cost> {
  fs.rmSync(out, { force: true });
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await convertImage(input, out, { format: 'raw', outputFormat: 'vmdk', formatOptions: { subformat: 'streamOptimized' } });
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

export async function vmdkStreamBench(mib = 256, rounds = 5): Promise<Record<string, unknown>> {
  if (spawnSync('qemu-img', ['--version']).status !== 0 || !fs.existsSync('/usr/bin/time')) {
    console.log('vmdk stream: skipped (needs qemu-img and /usr/bin/time)');
    return { skipped: true };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-vmdk-stream-bench-'));
  const p = (f: string) => path.join(dir, f);
  try {
    makeInput(p('in.raw'), mib);
    const q: Cost[] = [];
    const o: Cost[] = [];
    console.log(`vmdk stream: ${mib} MiB raw -> vmdk streamOptimized, convertImage vs qemu-img convert (speed ratios: > 1 is faster)`);
    const wall = await sideBySide(
      rounds,
      async () => {
        const c = qemuConvert(p('in.raw'), p('q.vmdk'));
        q.push(c);
        return 1 / c.wall;
      },
      async () => {
        const c = await ourConvert(p('in.raw'), p('o.vmdk'));
        o.push(c);
        return 1 / c.wall;
      },
    );
    const cpuRatios = o.map((c, i) => q[i].cpu / c.cpu).sort((a, b) => a - b);
    const ms = (s: number) => `${(s * 1000).toFixed(0)} ms`;
    row('raw -> vmdk streamOptimized (wall)', ms(median(o.map((c) => c.wall))), ms(median(q.map((c) => c.wall))), wall.ratio, wall.rounds);
    row('raw -> vmdk streamOptimized (cpu)', ms(median(o.map((c) => c.cpu))), ms(median(q.map((c) => c.cpu))), median(cpuRatios), cpuRatios);
    for (const f of ['q.vmdk', 'o.vmdk']) execFileSync('qemu-img', ['compare', '-q', '-f', 'vmdk', '-F', 'raw', p(f), p('in.raw')]);
    execFileSync('qemu-img', ['check', '-q', p('o.vmdk')]);
    const sizes = { qemu: fs.statSync(p('q.vmdk')).size, ours: fs.statSync(p('o.vmdk')).size };
    console.log(`  outputs: ours ${sizes.ours} bytes, qemu-img's ${sizes.qemu}; both compare equal to the input`);
    return { mib, wall, cpu: { ratio: median(cpuRatios), rounds: cpuRatios, ours: o.map((c) => c.cpu), qemu: q.map((c) => c.cpu) }, sizes };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await vmdkStreamBench(Number(process.argv[2] ?? 256), Number(process.argv[3] ?? 5));
