/**
 * The README's demo: drives on an embedded default, I/O under limits, and what happened.
 * Run: npm run demo
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlockLayer, type Drive } from 'blocklayer';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-demo-'));
const image = path.join(dir, 'disk.img');
fs.writeFileSync(image, '');
fs.truncateSync(image, 64 * 1024 * 1024); // a sparse 64 MiB raw image

const layer = new BlockLayer();
// Two drives of one tenant share 400 IOPS (a throttle group); a third drive alone gets 2 MiB/s.
const disk = await layer.openDrive({
  id: 'disk',
  driver: 'raw',
  file: { driver: 'file', filename: image },
  throttle: { iopsTotal: 400, group: 'tenant' },
});
const scratch = await layer.openDrive({ id: 'scratch', driver: 'memory', size: '256M', throttle: { group: 'tenant' } });
const backup = await layer.openDrive({ id: 'backup', driver: 'null', size: '1G', throttle: { bpsWrite: 2 * 1024 * 1024 } });

/** Keeps `depth` requests of `bs` bytes in flight on a drive for `ms` milliseconds. */
async function load(drive: Drive, op: 'read' | 'write', bs: number, depth: number, ms: number): Promise<number> {
  const end = performance.now() + ms;
  let ops = 0;
  await Promise.all(
    Array.from({ length: depth }, async (_, w) => {
      const buf = new Uint8Array(bs).fill(w + 1);
      while (performance.now() < end) {
        const offset = Math.floor(Math.random() * (drive.length / bs)) * bs;
        await (op === 'read' ? drive.read(offset, buf) : drive.write(offset, buf));
        ops++;
      }
    }),
  );
  return ops;
}

console.log('blocklayer demo: 3 drives, 2 s of I/O');
console.log("  disk    raw over a sparse file, 4 KiB random writes   } group 'tenant': 400 IOPS shared");
console.log('  scratch memory,              4 KiB random reads    }');
console.log('  backup  null,                64 KiB writes, 2 MiB/s alone\n');

const seconds = 2;
const [diskOps, scratchOps, backupOps] = await Promise.all([
  load(disk, 'write', 4096, 8, seconds * 1000),
  load(scratch, 'read', 4096, 8, seconds * 1000),
  load(backup, 'write', 65536, 4, seconds * 1000),
]);

const row = (d: Drive, ops: number) => {
  const s = d.stats();
  const t = s.throttle;
  const mib = (s.rdBytes + s.wrBytes) / 2 ** 20;
  return `  ${d.id.padEnd(8)} ${String(Math.round(ops / seconds)).padStart(6)} IOPS ${(mib / seconds).toFixed(2).padStart(7)} MiB/s   delayed ${String(t?.delayedRequests ?? 0).padStart(4)}   max delay ${((t?.maxDelayNs ?? 0) / 1e6).toFixed(1).padStart(6)} ms   group ${t?.group ?? '-'}`;
};
console.log('achieved (including the initial burst of avg/10 + 1 requests):');
for (const [d, ops] of [
  [disk, diskOps],
  [scratch, scratchOps],
  [backup, backupOps],
] as const)
  console.log(row(d, ops));

disk.setLimits({ iopsTotal: 0 }); // block_set_io_throttle with all zeros: the disk leaves throttling
console.log(`\nafter setLimits({ iopsTotal: 0 }) on disk: disk limits ${JSON.stringify(disk.getLimits())}, scratch ${JSON.stringify(scratch.getLimits())}`);

const map = await disk.blockStatusMap();
const data = map.filter((e) => e.data).reduce((n, e) => n + e.length, 0);
console.log(`disk block status: ${map.length} extents, ${(data / 2 ** 20).toFixed(2)} MiB data, ${((disk.length - data) / 2 ** 20).toFixed(2)} MiB holes`);

await layer.close();
fs.rmSync(dir, { recursive: true, force: true });
