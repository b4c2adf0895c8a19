import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { expectTreeOnDrive, expectWrittenImage, haveE2fsprogs, mkfsExt4, sha256, writeThroughExt2fs, writeTree } from '../helpers/ext4-images.js';
import { haveProgram, ok } from '../helpers/tools.js';

// ext2fs (libext2fs in WASM) mounts an ext4 image made by mkfs.ext4 through our file-disk adapter:
// every file read back must hash like the original; files it writes must satisfy e2fsck and debugfs.
const available = haveE2fsprogs('file-disk/ext2fs tests');
const haveQemuImg = haveProgram('qemu-img');
if (available && !haveQemuImg) {
  if (process.env.CI === 'true') throw new Error('qemu-img missing in CI: .ci/run must install qemu-utils');
  console.log('file-disk/ext2fs qcow2 case skipped: install qemu-utils (apt-get install qemu-utils)');
}

let dir: string;
let original: Map<string, string>;
/** sha256 of the image as mkfs.ext4 made it: read-only mounts must leave it so. */
let imageHash: string;
const p = (name: string) => path.join(dir, name);
const layer = new BlockLayer();

beforeAll(async () => {
  if (!available) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-ext2fs-'));
  original = writeTree(p('tree'), 7);
  await mkfsExt4(p('tree'), p('img.raw'));
  imageHash = sha256(fs.readFileSync(p('img.raw')));
  if (haveQemuImg) await ok('qemu-img', ['convert', '-O', 'qcow2', p('img.raw'), p('img.qcow2')]);
});
afterAll(async () => {
  await layer.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!available)('ext2fs over a DriveDisk', () => {
  it('reads every file of an ext4 image on a raw drive, byte for byte', async () => {
    const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: p('img.raw') }, readOnly: true });
    await expectTreeOnDrive(drive, original);
    await drive.close();
    expect(sha256(fs.readFileSync(p('img.raw')))).toBe(imageHash);
  });

  it.skipIf(!haveQemuImg)('reads every file of the same image converted to qcow2', async () => {
    const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: p('img.qcow2') }, readOnly: true });
    await expectTreeOnDrive(drive, original);
    await drive.close();
  });

  it('writes a file and a directory on a raw drive: e2fsck finds the image clean, debugfs reads them back', async () => {
    fs.copyFileSync(p('img.raw'), p('rw.raw'));
    const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: p('rw.raw') } });
    await writeThroughExt2fs(drive);
    await expectWrittenImage(p('rw.raw'), dir, original);
  });

  it('deletes a file and trims through ext2fs: discards reach the file (holes punched), the image stays clean', async () => {
    fs.copyFileSync(p('img.raw'), p('trim.raw'));
    const allocatedBefore = fs.statSync(p('trim.raw')).blocks;
    const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: p('trim.raw') } });
    await writeThroughExt2fs(drive, { trim: true });
    await expectWrittenImage(p('trim.raw'), dir, original);
    expect((await ok('debugfs', ['-R', 'ls /data', p('trim.raw')])).includes('one-meg.bin')).toBe(false);
    // At least the freed MiB of one-meg.bin was punched out of the file.
    expect(fs.statSync(p('trim.raw')).blocks).toBeLessThan(allocatedBefore);
  });
});
