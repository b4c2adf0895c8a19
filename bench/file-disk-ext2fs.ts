/**
 * ext2fs over our file-disk adapter: reading every file of an ext4 image (mkfs.ext4 -d, 24 MiB
 * of files) through a DriveDisk on a raw drive, against file-disk's own FileDisk on the same
 * image in the same run. Needs e2fsprogs; `node --import tsx bench/file-disk-ext2fs.ts`.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ext2fs from 'ext2fs';
import { type Disk, FileDisk } from 'file-disk';
import { DriveDisk } from '../src/adapters/file-disk.js';
import { BlockLayer } from '../src/index.js';
import { fmtRate, row, sideBySide } from './util.js';

const FILES = 24;
const FILE_SIZE = 1 << 20;

/** Reads every file under / through ext2fs; returns bytes per second. */
async function readAll(disk: Disk): Promise<number> {
  const start = process.hrtime.bigint();
  let bytes = 0;
  await ext2fs.withMountedDisk(disk, 0, async ({ promises: fsp }) => {
    for (const name of await fsp.readdir('/data')) {
      const { fd } = await fsp.open(`/data/${name}`, 'r');
      const buf = Buffer.alloc(FILE_SIZE);
      for (let done = 0; done < FILE_SIZE; ) {
        const { bytesRead } = await fsp.read(fd, buf.subarray(done), 0, FILE_SIZE - done, done);
        if (bytesRead === 0) throw new Error(`/data/${name}: short read at ${done}`);
        done += bytesRead;
      }
      await fsp.close(fd);
      bytes += FILE_SIZE;
    }
  });
  return bytes / (Number(process.hrtime.bigint() - start) / 1e9);
}

export async function fileDiskExt2fsBench(): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-bench-ext2fs-'));
  try {
    fs.mkdirSync(path.join(dir, 'tree/data'), { recursive: true });
    for (let i = 0; i < FILES; i++) fs.writeFileSync(path.join(dir, `tree/data/f${i}`), Buffer.alloc(FILE_SIZE, i + 1));
    const image = path.join(dir, 'img.raw');
    execFileSync('mkfs.ext4', ['-F', '-q', '-d', path.join(dir, 'tree'), image, '64M']);
    const layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: image }, readOnly: true });
    const handle = await fs.promises.open(image, 'r');
    console.log('ext2fs: read 24 x 1 MiB files (median of 9; baseline: file-disk FileDisk on the same image)');
    const r = await sideBySide(
      9,
      () => readAll(new FileDisk(handle, true, true)),
      () => readAll(new DriveDisk(drive)),
    );
    row('DriveDisk over raw/file drive', fmtRate(r.subject, 'B/s'), fmtRate(r.baseline, 'B/s'), r.ratio, r.rounds);
    await handle.close();
    await layer.close();
    return { readBytesPerSec: r.subject, fileDiskBytesPerSec: r.baseline, ratio: r.ratio };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await fileDiskExt2fsBench();
