/**
 * The project's benchmarks: `npm run bench` (quick set) or `npm run bench -- --full`.
 * Each scenario prints its figures next to a baseline measured in the same run; all results
 * are also written to bench/results/<time>.json (the history, see bench/history.ts) and each
 * ratio is shown next to the previous run's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { driveOverheadBench } from './drive-overhead.js';
import { compareRuns, previousRun } from './history.js';
import { throttleBench } from './throttle.js';

const full = process.argv.includes('--full');
const quick = !full;
const results: Record<string, unknown> = { date: new Date().toISOString(), full, node: process.version };

results.driveOverhead = await driveOverheadBench(quick);
console.log();
results.throttle = await throttleBench(quick);

/** Optional scenarios that live in their own modules (qcow2 and seqRead need qemu-img, rbd a Ceph cluster, soak two minutes, fileAio io_uring). */
async function optional(name: string, file: string, fn: string, when = true): Promise<void> {
  if (!when) return void console.log(`\n${name}: skipped (${file} runs with --full and its prerequisites)`);
  const url = new URL(file, import.meta.url);
  if (!fs.existsSync(url)) return void console.log(`\n${name}: skipped (${file} not present)`);
  console.log();
  const mod = (await import(url.href)) as Record<string, () => Promise<unknown>>;
  try {
    results[name] = await mod[fn]();
  } catch (e) {
    console.log(`${name}: failed: ${(e as Error).message}`);
  }
}
await optional('cliStartup', './cli-startup.ts', 'cliStartupBench');
await optional('dirtyBitmap', './dirty-bitmap.ts', 'dirtyBitmapBench');
await optional('qcow2', './qcow2-read.ts', 'qcow2ReadBench');
await optional('seqRead', './seq-read.ts', 'seqReadBench');
await optional('qcow2Write', './qcow2-write.ts', 'qcow2WriteBench', full);
await optional('fileAio', './file-aio.ts', 'fileAioBench', full);
await optional('rbd', './rbd.ts', 'rbdBench', full && Boolean(process.env.BLOCKLAYER_CEPH_CONF));
await optional('nbd', './nbd.ts', 'nbdBench', full);
await optional('nbdBitmap', './nbd-bitmap.ts', 'nbdBitmapBench', full);
await optional('streamCommit', './stream-commit.ts', 'streamCommitBench', full);
await optional('http', './http.ts', 'httpBench', full);
await optional('v86Boot', './v86-boot.ts', 'v86BootBench', full);
await optional('fileDiskExt2fs', './file-disk-ext2fs.ts', 'fileDiskExt2fsBench', full);
await optional('soak', './soak.ts', 'soakBench', full);
await optional('idleDrives', './idle-drives.ts', 'idleDrivesBench', full);
await optional('workerRpc', './worker-rpc.ts', 'workerRpcBench', full);
await optional('opfs', './opfs.ts', 'opfsBench', full);
await optional('convert', './convert.ts', 'convertBench', full);
await optional('browserBoot', './browser-boot.ts', 'browserBootBench', full);
await optional('qcow2Inplace', './qcow2-inplace.ts', 'qcow2InplaceBench', full);
await optional('snapshotInternal', './snapshot-internal.ts', 'snapshotInternalBench', full);
await optional('formatsRead', './formats-read.ts', 'formatsReadBench', full);
await optional('vmdkStream', './vmdk-stream.ts', 'vmdkStreamBench', full);
await optional('iothreads', './iothreads.ts', 'iothreadsBench', full);

const dir = path.join(import.meta.dirname, 'results');
fs.mkdirSync(dir, { recursive: true });
const out = path.join(dir, `${results.date as string}.json`.replace(/:/g, '-'));
fs.writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
console.log(`\nresults written to ${path.relative(process.cwd(), out)}`);
const prev = previousRun(dir, full, out);
if (prev) {
  console.log(`\nratios against the previous ${full ? 'full' : 'quick'} run (${prev.file}):`);
  for (const line of compareRuns(results, prev.data)) console.log(`  ${line}`);
}
