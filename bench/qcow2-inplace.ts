/**
 * Issue #27's row "qcow2, 4 KiB sequential writes in place QD16": ours (a Drive in this
 * process) vs `qemu-img bench -w -d 16 -t writeback -i <aio> -s 4k -S 4k` on the same
 * preallocated image (every cluster mapped and its data blocks allocated: no write allocates,
 * in the image or in the host file system). The same pattern on a raw file gives the floor of
 * our request path (file driver alone vs qemu-img bench on raw). Both engines where the
 * kernel has io_uring.
 *
 * Two figures per row: requests per second side by side (alternating rounds, median of paired
 * ratios, the range printed) and CPU time per 100k requests (ours: process.cpuUsage over the
 * run, libuv's pool threads included; qemu-img: user+sys of its process from wait4, so its open
 * and close are in it too). CPU time depends much less on other load than the rate does.
 *
 *   npx tsx bench/qcow2-inplace.ts [--rounds N] [--count N]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sharedUring } from '../src/drivers/file/uring.js';
import { BlockLayer } from '../src/index.js';
import { fmtRate, median, row, sideBySide } from './util.js';

const MIB = 1024 * 1024;
const BS = 4096;
const DEPTH = 16;

type Aio = 'threads' | 'io_uring';
type Format = 'qcow2' | 'raw';

interface Run {
  /** Requests per second. */
  rate: number;
  /** CPU seconds (user + system) per 100k requests. */
  cpu: number;
}

/** A preallocated image of `size` bytes: qcow2 with every cluster mapped, or a raw file, data blocks allocated in both. */
function makeImage(dir: string, format: Format, size: number): string {
  const file = path.join(dir, `inplace.${format}`);
  fs.rmSync(file, { force: true });
  const r = spawnSync('qemu-img', ['create', '-q', '-f', format, '-o', 'preallocation=falloc', file, String(size)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`qemu-img create: ${r.stderr}`);
  return file;
}

/** qemu-img bench's own rate ("Run completed in X seconds") and its process's CPU time (GNU time). */
function qemuImgBench(file: string, format: Format, aio: Aio, count: number): Run {
  const args = ['-f', '%U %S', 'qemu-img', 'bench', '-w', '-f', format, '-t', 'writeback', '-i', aio, '-c', String(count), '-d', String(DEPTH), '-s', String(BS), '-S', String(BS), file];
  const r = spawnSync('/usr/bin/time', args, { encoding: 'utf8' });
  const m = /Run completed in ([\d.]+) seconds/.exec(r.stdout);
  const t = /([\d.]+) ([\d.]+)\s*$/.exec(r.stderr);
  if (r.status !== 0 || !m || !t) throw new Error(`qemu-img bench: unexpected output: ${r.stdout} ${r.stderr}`);
  return { rate: count / Number(m[1]), cpu: ((Number(t[1]) + Number(t[2])) * 100_000) / count };
}

/** The same pattern through a Drive: DEPTH workers share one request counter, request i at i * BS (wrapping at the image's end). */
async function ourBench(file: string, format: Format, aio: Aio, count: number, size: number): Promise<Run> {
  const layer = new BlockLayer();
  const fileNode = { driver: 'file', filename: file, aio };
  const drive = await layer.openDrive(format === 'qcow2' ? { driver: 'qcow2', file: fileNode } : fileNode);
  const buf = new Uint8Array(BS);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      await drive.write((i * BS) % size, buf);
    }
  };
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const workers: Promise<void>[] = [];
  for (let w = 0; w < DEPTH; w++) workers.push(worker());
  await Promise.all(workers);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await layer.close();
  return { rate: count / seconds, cpu: ((cpu.user + cpu.system) / 1e6) * (100_000 / count) };
}

function qemuImgHas(aio: Aio, file: string): boolean {
  const r = spawnSync('qemu-img', ['bench', '-f', 'raw', '-i', aio, '-c', '1', file], { encoding: 'utf8' });
  return r.status === 0;
}

export async function qcow2InplaceBench(rounds = 5, count = 100_000): Promise<Record<string, unknown>> {
  if (spawnSync('qemu-img', ['--version']).status !== 0) {
    console.log('qcow2 in place: skipped (qemu-img not installed)');
    return { skipped: true };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-inplace-'));
  // Large enough that the run does not wrap much, small enough to sit in the page cache.
  const size = 256 * MIB;
  const results: Record<string, unknown> = { loadBefore: os.loadavg() };
  console.log(`qcow2 in place: 4 KiB sequential writes QD${DEPTH} on a preallocated ${size / MIB} MiB image, ours vs qemu-img bench -w -t writeback, ${count} requests, median of ${rounds} alternating rounds`);
  console.log(`  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} on ${os.cpus().length} CPUs`);
  try {
    const engines: Aio[] = ['threads'];
    if (typeof sharedUring() !== 'string') engines.push('io_uring');
    for (const aio of engines) {
      for (const format of ['qcow2', 'raw'] as const) {
        const file = makeImage(dir, format, size);
        if (!qemuImgHas(aio, file)) {
          console.log(`  ${format}, aio=${aio}: skipped (qemu-img bench has no -i ${aio} here)`);
          continue;
        }
        const ours: number[] = [];
        const theirs: number[] = [];
        const r = await sideBySide(
          rounds,
          async () => {
            const q = qemuImgBench(file, format, aio, count);
            theirs.push(q.cpu);
            return q.rate;
          },
          async () => {
            const o = await ourBench(file, format, aio, count, size);
            ours.push(o.cpu);
            return o.rate;
          },
        );
        const check = format === 'qcow2' ? spawnSync('qemu-img', ['check', '-q', file]).status : 0;
        const label = `${format} 4 KiB seq writes QD${DEPTH}, aio=${aio}`;
        results[label] = { ...r, cpuPer100k: { ours: median(ours), qemuImg: median(theirs) }, checkStatus: check };
        row(label, `${fmtRate(r.subject)}/s`, `${fmtRate(r.baseline)}/s`, r.ratio, r.rounds);
        console.log(`  ${''.padEnd(46)} CPU s per 100k: ${median(ours).toFixed(2)} vs ${median(theirs).toFixed(2)}${check !== 0 ? `  (qemu-img check: status ${check})` : ''}`);
      }
    }
    results.loadAfter = os.loadavg();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const flag = (name: string, dflt: number) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? Number(process.argv[i + 1]) : dflt;
  };
  await qcow2InplaceBench(flag('--rounds', 5), flag('--count', 100_000));
}
