/**
 * qcow2 read speed: converting an image to raw through our driver vs `qemu-img convert -O raw`,
 * on the same images in the same run (a plain image with data, and a compressed one).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlockLayer } from '../src/index.js';
import { fmtRate, row, sideBySide } from './util.js';

const SIZE_MIB = 256;

/** Our convert: read the guest view in 4 MiB pieces, skip zero extents, write the rest. */
async function ourConvert(image: string, out: string): Promise<void> {
  const layer = new BlockLayer();
  const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image } });
  const fd = fs.openSync(out, 'w');
  fs.ftruncateSync(fd, d.length);
  const buf = Buffer.allocUnsafe(4 << 20);
  for (let pos = 0; pos < d.length; ) {
    const s = await d.blockStatus(pos, Math.min(buf.length, d.length - pos));
    if (!s.zero) {
      await d.read(pos, buf.subarray(0, s.length));
      fs.writeSync(fd, buf, 0, s.length, pos);
    }
    pos += s.length;
  }
  fs.closeSync(fd);
  await layer.close();
}

export async function qcow2ReadBench(): Promise<Record<string, unknown>> {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
  } catch {
    console.log('qcow2 read: skipped (qemu-img not installed)');
    return { skipped: true };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-bench-'));
  const plain = path.join(dir, 'plain.qcow2');
  const compressed = path.join(dir, 'compressed.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', plain, `${SIZE_MIB}M`]);
  // Data in most clusters, with a few holes, in 16 MiB writes of varying patterns.
  const cmds: string[] = [];
  for (let mib = 0; mib < SIZE_MIB; mib += 16) if (mib % 64 !== 48) cmds.push('-c', `write -P ${(mib / 16) & 0xff} ${mib}M 16M`);
  execFileSync('qemu-io', ['-f', 'qcow2', ...cmds, plain], { stdio: 'ignore' });
  execFileSync('qemu-img', ['convert', '-q', '-c', '-O', 'qcow2', plain, compressed]);
  const out = path.join(dir, 'out.raw');
  const results: Record<string, unknown> = {};
  console.log(`qcow2 read: convert a ${SIZE_MIB} MiB image to raw (MB/s of guest data), ours vs qemu-img convert`);
  for (const [label, image] of [
    ['plain', plain],
    ['compressed', compressed],
  ] as const) {
    const timeOf = async (fn: () => Promise<void> | void) => {
      const t0 = performance.now();
      await fn();
      return (SIZE_MIB * 1.048576) / ((performance.now() - t0) / 1000);
    };
    const r = await sideBySide(
      3,
      () => timeOf(() => void execFileSync('qemu-img', ['convert', '-O', 'raw', image, out])),
      () => timeOf(() => ourConvert(image, out)),
    );
    results[label] = r;
    row(`qcow2 ${label} -> raw`, `${fmtRate(r.subject)} MB/s`, `${fmtRate(r.baseline)} MB/s`, r.ratio, r.rounds);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) await qcow2ReadBench();
