/**
 * NBD server speed: our NbdServer vs qemu-nbd serving the same raw file, both measured with the
 * same client (fio's nbd engine) in the same run: 4 KiB random reads at QD32, 1 MiB sequential
 * reads and writes at QD8. Run: `npx tsx bench/nbd.ts [--seconds N]` (or `npm run bench -- --full`).
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { BlockLayer, NbdServer } from '../src/index.js';
import { fmtRate, row, sideBySide } from './util.js';

const run = promisify(execFile);
const SIZE = 256 * 1024 * 1024;

interface Scenario {
  label: string;
  rw: 'randread' | 'read' | 'write';
  bs: string;
  iodepth: number;
}
const SCENARIOS: Scenario[] = [
  { label: '4 KiB random reads, QD32 (IOPS)', rw: 'randread', bs: '4k', iodepth: 32 },
  { label: '1 MiB sequential reads, QD8 (MB/s)', rw: 'read', bs: '1M', iodepth: 8 },
  { label: '1 MiB sequential writes, QD8 (MB/s)', rw: 'write', bs: '1M', iodepth: 8 },
];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitForPort(port: number, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on port ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One fio run against an NBD URI: IOPS for 4 KiB jobs, MB/s for 1 MiB ones. */
async function fio(uri: string, s: Scenario, seconds: number): Promise<number> {
  const { stdout } = await run('fio', [
    '--name=nbdbench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${s.rw}`,
    `--bs=${s.bs}`,
    `--iodepth=${s.iodepth}`,
    `--size=${SIZE}`,
    `--runtime=${seconds}`,
    '--time_based',
    '--output-format=json',
  ], { maxBuffer: 16 << 20 });
  const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: { read: { iops: number; bw_bytes: number }; write: { iops: number; bw_bytes: number } }[] }).jobs[0];
  const side = s.rw === 'write' ? job.write : job.read;
  return s.bs === '4k' ? side.iops : side.bw_bytes / 1e6;
}

/** Serves `file` with qemu-nbd for the duration of `fn`. */
async function withQemuNbd<T>(file: string, fn: (uri: string) => Promise<T>): Promise<T> {
  const port = await freePort();
  const p = spawn('qemu-nbd', ['-f', 'raw', '-x', 'disk', '-b', '127.0.0.1', '-p', String(port), '--persistent', '--shared=8', '--cache=writeback', file], { stdio: 'ignore' });
  try {
    await waitForPort(port);
    return await fn(`nbd://127.0.0.1:${port}/disk`);
  } finally {
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
  }
}

/** Serves `file` with our NbdServer (raw over file, one Drive) for the duration of `fn`. */
async function withOurs<T>(file: string, fn: (uri: string) => Promise<T>): Promise<T> {
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: file } });
  const server = new NbdServer({ exports: [{ name: 'disk', drive }] });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  try {
    return await fn(`nbd://127.0.0.1:${(address as { port: number }).port}/disk`);
  } finally {
    await server.close();
    await layer.close();
  }
}

export async function nbdBench(seconds = 5): Promise<Record<string, unknown>> {
  for (const tool of ['fio', 'qemu-nbd']) {
    try {
      await run(tool, ['--version']);
    } catch {
      console.log(`nbd server: skipped (${tool} not installed)`);
      return { skipped: true };
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-nbd-bench-'));
  const file = path.join(dir, 'disk.raw');
  fs.writeFileSync(file, Buffer.alloc(SIZE, 0x5a)); // fully allocated, in the page cache
  const results: Record<string, unknown> = {};
  console.log(`nbd server: fio --ioengine=nbd against ours and qemu-nbd on the same ${SIZE >> 20} MiB raw file, ${seconds} s each, median of 3`);
  try {
    for (const s of SCENARIOS) {
      const r = await sideBySide(
        3,
        () => withQemuNbd(file, (uri) => fio(uri, s, seconds)),
        () => withOurs(file, (uri) => fio(uri, s, seconds)),
      );
      results[s.label] = r;
      const unit = s.bs === '4k' ? ' IOPS' : ' MB/s';
      row(s.label, fmtRate(r.subject, unit), fmtRate(r.baseline, unit), r.ratio);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--seconds');
  await nbdBench(i > 0 ? Number(process.argv[i + 1]) : 5);
}
