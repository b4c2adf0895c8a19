/**
 * Regressions found by scripts/fuzz.ts in the image formats' write paths, bitmaps and
 * multi-file images: each mutant is made here from a qemu-img seed with the fuzzer's few byte
 * changes, and must end in data or a BlockError naming the field, as QEMU would refuse it.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, checkImage } from '../../src/index.js';
import { haveQemuTools, qemuImg, qemuIo } from '../helpers/qemu-images.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('fuzz-regressions-formats: skipped: install qemu-utils (apt-get install qemu-utils) to run them');

let dir = '';
let layer = new BlockLayer();
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-fuzz-formats-'));
});
afterEach(async () => {
  await layer.close();
  layer = new BlockLayer();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A fresh qcow2 made by qemu-img, then `patch`ed in place. */
function mutant(name: string, size: string, patch: (b: Buffer) => void, opts = 'cluster_size=65536'): string {
  const file = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', opts, file, size);
  const b = fs.readFileSync(file);
  patch(b);
  fs.writeFileSync(file, b);
  return file;
}

async function settled(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return e;
  }
}

describe.skipIf(!available)('qcow2 write paths', () => {
  it('a refcount table that reads as zeros (its offset past the end of the file) refuses the first allocation with ECORRUPT and never writes over the header', async () => {
    // fuzz: l2ext.qcow2 "byte 50=128": refcount_table_offset gains 2^47. Every refcount then reads
    // 0, the header's cluster too; the refcount block for it would have taken cluster 0 (the
    // header), and the refcount table entry was written at 128 TiB, a raw EFBIG out of close.
    // QEMU's overlap check refuses a write over qcow2_header.
    const file = mutant('reftable-past-eof.qcow2', '1M', (b) => {
      b[50] = 0x80;
    });
    const header = fs.readFileSync(file).subarray(0, 512);
    const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } });
    const e = await settled(drive.write(0, new Uint8Array(4096).fill(1)));
    expect(e, String(e)).toBeInstanceOf(BlockError);
    expect((e as BlockError).code).toBe('ECORRUPT');
    expect((e as BlockError).field).toBe('refcount table');
    const closed = await settled(drive.close());
    expect(closed === undefined || closed instanceof BlockError, String(closed)).toBe(true);
    expect(fs.readFileSync(file).subarray(0, 512).equals(header)).toBe(true);
  });

  for (const [what, entry] of [
    ['past the end of the file', 0x100000n],
    ['beyond 2^53 (fuzz: zstd.qcow2 "table 65536", EINVAL from the file node range guard at the write-back at close)', 0xfffffe00020000n],
  ] as const) {
    it(`a refcount table entry pointing ${what} refuses the first allocation with ECORRUPT and leaves the metadata alone`, async () => {
      // Its zeros would free every cluster; QEMU: "Preventing invalid allocation of L2 table at offset 0", EIO.
      const file = mutant(`refblock-${entry}.qcow2`, '1M', (b) => {
        b.writeBigUInt64BE(entry, 65536); // the refcount table's entry 0 (the table is at 64 KiB)
      });
      const before = fs.readFileSync(file);
      const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } });
      const e = await settled(drive.write(0, new Uint8Array(4096).fill(1)));
      expect(e, String(e)).toBeInstanceOf(BlockError);
      expect((e as BlockError).code).toBe('ECORRUPT');
      expect((e as BlockError).field).toBe('refcount table');
      expect((e as BlockError).message).toMatch(/refcount table entry 0 points to a refcount block at \d+, past the end of the image/);
      expect(await settled(drive.close())).toBeUndefined();
      expect(fs.readFileSync(file).equals(before)).toBe(true);
    });
  }
});

describe.skipIf(!available)('qcow2 check repairs', () => {
  it('check -r all rewrites an L2 table that ends past the end of the file whole, growing the file as qemu-img does (not a range refusal)', async () => {
    // fuzz: snap.qcow2 truncated mid-cluster, then check -r all: the OFLAG_COPIED repair wrote the
    // L2 cluster back past the end of the file and the file node refused it with EINVAL.
    // 1 MiB, 64 KiB clusters: header, refcount table, refcount block, L1, the L2 at 256 KiB, data at 320 KiB.
    const file = path.join(dir, 'l2-past-eof.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', file, '1M');
    qemuIo(file, ['write -P 0x5a 0 4k']);
    const b = fs.readFileSync(file);
    expect(b.readBigUInt64BE(262144)).toBe(0x8000000000050000n); // L2 entry 0: the data at 320 KiB, COPIED
    b[262144] &= 0x7f; // COPIED off: the repair rewrites the L2 table
    const theirs = `${file}.qemu`;
    fs.writeFileSync(file, b.subarray(0, 262144 + 100)); // and the file ends 100 bytes into it
    fs.copyFileSync(file, theirs);
    const r = await checkImage(file, { format: 'qcow2', repair: 'all', log: () => {} });
    expect([r.corruptionsFixed, r.corruptions, r.imageEndOffset]).toEqual([1, 1, 327680]);
    try {
      qemuImg('check', '-q', '-r', 'all', theirs);
    } catch {
      // exit 2: the corruption left (the data cluster past the end) is reported
    }
    expect(fs.readFileSync(file).equals(fs.readFileSync(theirs))).toBe(true);
  });
});

describe.skipIf(!available)('qcow2 persistent bitmaps', () => {
  /** The fuzzer's bitmaps-1k seed: 1 KiB clusters, two bitmaps with dirty granules; qemu-io stores the directory last, at the end of the file. */
  function bitmapsSeed(name: string): { file: string; nameAt: number } {
    const file = path.join(dir, name);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=1024', file, '16M');
    qemuImg('bitmap', '--add', '-g', '512', file, 'fine');
    qemuImg('bitmap', '--add', '-g', '4k', file, 'coarse');
    qemuIo(file, ['write -P 0xab 0 8k', 'write -P 0x21 5M 1k']);
    const b = fs.readFileSync(file);
    const nameAt = b.lastIndexOf('fine');
    expect(b.length - nameAt).toBeLessThan(64); // the directory ends the file
    return { file, nameAt };
  }

  it('a bitmap name that is not UTF-8 is written back byte for byte when a read-write open marks the bitmaps in use', async () => {
    // fuzz: bitmaps-1k.qcow2 "table 95252" (ff ff ff ff over the name 'fine'): the name came back
    // as four U+FFFD, 12 bytes, and the in-place rewrite ran past the directory and the file (EINVAL).
    const { file, nameAt } = bitmapsSeed('name-not-utf8.qcow2');
    const b = fs.readFileSync(file);
    b.fill(0xff, nameAt, nameAt + 4);
    fs.writeFileSync(file, b);
    const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } });
    expect(drive.dirtyBitmaps().map((x) => x.name)).toEqual(['\ufffd\ufffd\ufffd\ufffd', 'coarse']);
    const opened = fs.readFileSync(file);
    expect(opened.length).toBe(b.length);
    expect(opened.subarray(nameAt, nameAt + 4)).toEqual(Buffer.alloc(4, 0xff));
    await drive.close();
    expect(qemuImg('check', file)).toMatch(/No errors were found/);
  });

  it('a bitmap name with a NUL byte inside, whose directory would shrink when written back in place, refuses a read-write open with EINVAL and leaves the file alone', async () => {
    const { file, nameAt } = bitmapsSeed('name-nul.qcow2');
    const b = fs.readFileSync(file);
    b.writeUInt32BE(1, nameAt); // the name: 00 00 00 01
    fs.writeFileSync(file, b);
    const e = await settled(layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } }));
    expect(e, String(e)).toBeInstanceOf(BlockError);
    expect([(e as BlockError).code, (e as BlockError).field]).toEqual(['EINVAL', 'bitmap directory']);
    expect(fs.readFileSync(file).equals(b)).toBe(true);
  });
});

describe.skipIf(!available)('qcow2 check counts', () => {
  it('an L1 table grown over the rest of the file (L2 offsets past its end, by the thousand) is counted as qemu-img check counts it', async () => {
    // fuzz slow case: bitmaps.qcow2 "header 36/4" (l1_size 65536): every L2 table past the end of the
    // file was read and walked twice, zeros included. They hold nothing to count; the result is qemu-img's.
    const file = path.join(dir, 'l1-over-file.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', file, '4M');
    qemuIo(file, ['write -P 0xab 0 1M', 'write -P 0x01 2M 64k']);
    const b = fs.readFileSync(file);
    b.writeUInt32BE(65536, 36);
    fs.writeFileSync(file, b);
    // exit 2 (corruptions found): the JSON is on stdout all the same
    const theirs = JSON.parse(spawnSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8', maxBuffer: 1 << 26 }).stdout) as Record<string, number>;
    const ours = await checkImage(file, { format: 'qcow2', log: () => {} });
    expect(theirs.corruptions).toBeGreaterThan(0);
    expect([ours.corruptions, ours.leaks, ours.checkErrors, ours.allocatedClusters, ours.imageEndOffset]).toEqual([
      theirs.corruptions,
      theirs.leaks ?? 0,
      theirs['check-errors'],
      theirs['allocated-clusters'],
      theirs['image-end-offset'],
    ]);
  });
});

describe.skipIf(!available)('vmdk flat extents', () => {
  it('write-zeroes past the end of a flat extent file shorter than its extent grows the file, as writes do (not a range refusal)', async () => {
    // fuzz: flat.vmdk "line= 8" (RW 4294967295 FLAT "flat-flat.vmdk" 0): a 2 TiB extent over a 1 MiB file.
    const file = path.join(dir, 'short-flat.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', file, '1M');
    const extent = path.join(dir, 'short-flat-flat.vmdk');
    fs.writeFileSync(extent, Buffer.alloc(1 << 20, 0x11));
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/RW 2048 FLAT/, 'RW 4096 FLAT'));
    const drive = await layer.openDrive({ driver: 'vmdk', file: { driver: 'file', filename: file } });
    expect(drive.length).toBe(2 << 20);
    await drive.writeZeroes((1 << 20) - 4096, 8192);
    expect(fs.statSync(extent).size).toBe((1 << 20) + 4096);
    expect(Buffer.from(await drive.read((1 << 20) - 8192, 16384))).toEqual(Buffer.concat([Buffer.alloc(4096, 0x11), Buffer.alloc(12288)]));
  });
});
