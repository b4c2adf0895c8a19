import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { expectWrittenImage, haveE2fsprogs, mkfsExt4, writeThroughExt2fs, writeTree } from '../helpers/ext4-images.js';
import { haveProgram, ok } from '../helpers/tools.js';

// ext2fs writes through DriveDisk onto a qcow2 drive; the image, converted back to raw by
// qemu-img, must satisfy e2fsck and hold the new files. Needs the writable qcow2 driver.
const available = haveE2fsprogs('file-disk/ext2fs qcow2 write test');
const haveQemuImg = haveProgram('qemu-img');
if (available && !haveQemuImg) {
  if (process.env.CI === 'true') throw new Error('qemu-img missing in CI: .ci/run must install qemu-utils');
  console.log('file-disk/ext2fs qcow2 write test skipped: install qemu-utils (apt-get install qemu-utils)');
}

let dir: string;
let original: Map<string, string>;
const p = (name: string) => path.join(dir, name);
const layer = new BlockLayer();

beforeAll(async () => {
  if (!available || !haveQemuImg) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-ext2fs-qcow2-'));
  original = writeTree(p('tree'), 11);
  await mkfsExt4(p('tree'), p('img.raw'));
  await ok('qemu-img', ['convert', '-O', 'qcow2', p('img.raw'), p('img.qcow2')]);
});
afterAll(async () => {
  await layer.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!available || !haveQemuImg)('ext2fs writing through a DriveDisk on a qcow2 drive', () => {
  it('writes a file and a directory: qemu-img check passes, the raw conversion is clean for e2fsck and holds them', async () => {
    const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: p('img.qcow2') } });
    expect(drive.readOnly, 'a qcow2 drive opened for writing is writable (needs the writable qcow2 driver)').toBe(false);
    await writeThroughExt2fs(drive);
    await ok('qemu-img', ['check', p('img.qcow2')]);
    await ok('qemu-img', ['convert', '-O', 'raw', p('img.qcow2'), p('back.raw')]);
    await expectWrittenImage(p('back.raw'), dir, original);
  });
});
