/**
 * Open-time verdicts of the qcow2 driver against qemu-img's on the same bytes: each image is made
 * by qemu-img, patched, then opened by qemu-img (info and convert) and by us. Where QEMU refuses
 * we refuse (ECORRUPT/ENOTSUP naming the field); where QEMU opens we open and read what
 * `qemu-img convert` reads.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer } from '../../src/index.js';
import { driveHash, haveQemuTools, qemuImg, qemuIo, setQemuCwd } from '../helpers/qemu-images.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');

let dir: string;
const p = (name: string) => path.join(dir, name);
const layer = new BlockLayer();

const EXT_BITMAPS = 0x23852875;

beforeAll(() => {
  if (!available) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-refuse-'));
  setQemuCwd(dir);
  qemuImg('create', '-q', '-f', 'qcow2', p('plain.qcow2'), '1M');
  qemuIo(p('plain.qcow2'), ['write -P 0x11 0 64k', 'write -P 0x12 900k 8k']);
  fs.copyFileSync(p('plain.qcow2'), p('bitmap.qcow2'));
  qemuImg('bitmap', '--add', p('bitmap.qcow2'), 'b0');
  fs.copyFileSync(p('plain.qcow2'), p('bitmap2.qcow2'));
  qemuImg('bitmap', '--add', p('bitmap2.qcow2'), 'b0');
  qemuImg('bitmap', '--add', p('bitmap2.qcow2'), 'b1');
  fs.copyFileSync(p('plain.qcow2'), p('snap.qcow2'));
  qemuImg('snapshot', '-c', 's1', p('snap.qcow2'));
  qemuIo(p('snap.qcow2'), ['write -P 0x22 0 4k']);
  fs.writeFileSync(p('base.raw'), Buffer.alloc(1 << 20, 0x5b));
});
afterAll(async () => {
  await layer.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** A copy of `base` with bytes patched, under `name`. */
function patched(base: string, name: string, patch: (b: Buffer) => void): string {
  const b = fs.readFileSync(p(base));
  patch(b);
  fs.writeFileSync(p(name), b);
  return p(name);
}

/** Offset of the header extension of `type`, or of the end marker (type 0). */
function extension(b: Buffer, type: number): number {
  let at = b.readUInt32BE(100);
  for (;;) {
    const t = b.readUInt32BE(at);
    if (t === type) return at;
    if (t === 0) throw new Error(`no header extension ${type.toString(16)}`);
    at += 8 + Math.ceil(b.readUInt32BE(at + 4) / 8) * 8;
  }
}
const endMarker = (b: Buffer) => extension(b, 0);
/** Offset of the fields of the bitmaps extension (nb_bitmaps, reserved, directory size, offset). */
const bitmapsExt = (b: Buffer) => extension(b, EXT_BITMAPS) + 8;
/** Offset of the first bitmap directory entry. */
const bitmapDir = (b: Buffer) => Number(b.readBigUInt64BE(bitmapsExt(b) + 16));
/** Offset of the first snapshot table entry. */
const snapEntry = (b: Buffer) => Number(b.readBigUInt64BE(64));

interface QemuVerdict {
  ok: boolean;
  message: string;
  hash?: string;
}

/** What `qemu-img convert` (of a snapshot with -l) makes of an image: refusal message or content hash. */
function qemuConvert(image: string, snapshot?: string): QemuVerdict {
  const out = p('qemu-out.raw');
  const args = ['convert', '-f', 'qcow2', '-O', 'raw', ...(snapshot ? ['-l', `snapshot.name=${snapshot}`] : []), image, out];
  const r = spawnSync('qemu-img', args, { encoding: 'utf8', cwd: dir });
  if (r.status !== 0) return { ok: false, message: r.stderr };
  const hash = createHash('sha256').update(fs.readFileSync(out)).digest('hex');
  fs.rmSync(out);
  return { ok: true, message: r.stderr, hash };
}

/** Whether `qemu-img info` opens an image. */
function qemuInfo(image: string): QemuVerdict {
  const r = spawnSync('qemu-img', ['info', '-f', 'qcow2', image], { encoding: 'utf8', cwd: dir });
  return { ok: r.status === 0, message: r.stderr + r.stdout };
}

type Ours = { ok: true; hash: string; length: number; info: Record<string, unknown> } | { ok: false; error: BlockError };

/** Opens an image with our driver (a snapshot if given) and reads it all. */
async function ours(image: string, snapshot?: string): Promise<Ours> {
  try {
    // Read-only, as qemu-img convert opens it.
    const d = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: image }, ...(snapshot ? { snapshot } : {}) });
    try {
      return { ok: true, hash: await driveHash(d), length: d.length, info: d.node.info() };
    } finally {
      await d.close();
    }
  } catch (e) {
    expect(e).toBeInstanceOf(BlockError);
    return { ok: false, error: e as BlockError };
  }
}

/** Both refuse: qemu-img info and convert with `qemuMessage`, we with `code` and `message`. */
async function bothRefuse(image: string, qemuMessage: RegExp, code: string, message: RegExp, snapshot?: string) {
  const q = qemuConvert(image, snapshot);
  expect(q.ok, 'qemu-img convert opened it').toBe(false);
  expect(q.message).toMatch(qemuMessage);
  if (!snapshot) expect(qemuInfo(image).ok, 'qemu-img info opened it').toBe(false);
  const r = await ours(image, snapshot);
  if (r.ok) throw new Error(`our driver opened ${path.basename(image)}${snapshot ? `@${snapshot}` : ''}; qemu-img: ${q.message}`);
  expect(r.error.code, r.error.message).toBe(code);
  expect(r.error.message).toMatch(message);
  return r.error;
}

/** Both open and read the same bytes; returns what we saw. */
async function bothOpen(image: string, snapshot?: string) {
  const q = qemuConvert(image, snapshot);
  expect(q.ok, `qemu-img convert refused: ${q.message}`).toBe(true);
  const r = await ours(image, snapshot);
  if (!r.ok) throw new Error(`our driver refused ${path.basename(image)}: ${r.error.message}`);
  expect(r.hash).toBe(q.hash);
  return r;
}

describe.skipIf(!available)('qcow2 header refusals match qemu-img', () => {
  it('an extension running past the end of the header cluster is refused (QEMU: Header extension too large)', async () => {
    const img = patched('plain.qcow2', 'ext-past.qcow2', (b) => {
      const e = endMarker(b);
      b.writeUInt32BE(0x12345678, e);
      b.writeUInt32BE(0x10000, e + 4);
    });
    const e = await bothRefuse(img, /Header extension too large/, 'ECORRUPT', /header extension .*runs past the end of the extension area \(byte 65536\)/);
    expect(e.field).toBe('header extension');
  });

  it('an end marker whose length runs past the cluster is refused: QEMU checks the length before the type', async () => {
    const img = patched('plain.qcow2', 'end-len.qcow2', (b) => b.writeUInt32BE(0xfffffff0, endMarker(b) + 4));
    await bothRefuse(img, /Header extension too large/, 'ECORRUPT', /header extension of 4294967280 bytes runs past/);
  });

  it('extensions end at the backing file name: one running into it is refused', async () => {
    const img = patched('plain.qcow2', 'ext-into-name.qcow2', (b) => {
      const e = endMarker(b);
      b.writeUInt32BE(0x12345678, e);
      b.writeUInt32BE(16, e + 4);
      b.writeBigUInt64BE(BigInt(e + 16), 8);
      b.writeUInt32BE(8, 16);
      b.write('base.raw', e + 16);
    });
    await bothRefuse(img, /Header extension too large/, 'ECORRUPT', /runs past the end of the extension area \(byte \d+\)/);
  });

  it('an extension header straddling the backing file name is refused', async () => {
    const img = patched('plain.qcow2', 'ext-straddle.qcow2', (b) => {
      const e = endMarker(b);
      b.writeBigUInt64BE(BigInt(e + 4), 8);
      b.writeUInt32BE(8, 16);
      b.write('base.raw', e + 4);
    });
    await bothRefuse(img, /Header extension too large/, 'ECORRUPT', /header extension header runs past the end of the extension area/);
  });

  it('an extension ending exactly at the backing file name is accepted and the backing file is read', async () => {
    const img = patched('plain.qcow2', 'ext-fits-name.qcow2', (b) => {
      const e = endMarker(b);
      b.writeUInt32BE(0x12345678, e);
      b.writeUInt32BE(8, e + 4);
      b.writeBigUInt64BE(BigInt(e + 16), 8);
      b.writeUInt32BE(8, 16);
      b.write('base.raw', e + 16);
    });
    const r = await bothOpen(img);
    expect(r.info.backingFile).toBe('base.raw');
  });

  it('a backing file name of 0 bytes means no backing file, as in QEMU', async () => {
    const img = patched('plain.qcow2', 'empty-name.qcow2', (b) => {
      b.writeBigUInt64BE(BigInt(endMarker(b) + 8), 8);
      b.writeUInt32BE(0, 16);
    });
    const r = await bothOpen(img);
    expect(r.info.backingFile).toBeUndefined();
  });

  it('a backing format extension of 16 bytes is refused (QEMU keeps at most 15)', async () => {
    const img = patched('plain.qcow2', 'fmt16.qcow2', (b) => {
      const e = endMarker(b);
      b.writeUInt32BE(0xe2792aca, e);
      b.writeUInt32BE(16, e + 4);
      b.write('qcow2qcow2qcow2q', e + 8);
    });
    await bothRefuse(img, /ext_backing_format: len=16 too large/, 'ECORRUPT', /backing format extension of 16 bytes is longer than 15/);
  });

  it('a crypto header extension in an unencrypted image is refused', async () => {
    const img = patched('plain.qcow2', 'crypto-ext.qcow2', (b) => {
      const e = endMarker(b);
      b.writeUInt32BE(0x0537be77, e);
      b.writeUInt32BE(16, e + 4);
    });
    await bothRefuse(img, /CRYPTO header extension only expected with LUKS/, 'ECORRUPT', /crypto header extension .*only expected with LUKS/);
  });

  it('the compression type bit set while compression_type is zlib is refused', async () => {
    const img = patched('plain.qcow2', 'zlib-bit.qcow2', (b) => {
      expect(b[104]).toBe(0);
      b.writeUInt32BE(b.readUInt32BE(76) | 8, 76);
    });
    const e = await bothRefuse(img, /Compression type incompatible feature bit must not be set/, 'ECORRUPT', /incompatible_features has the compression type bit \(3\) set but compression_type is zlib/);
    expect(e).toMatchObject({ field: 'incompatible_features', offset: 76 });
  });

  it('the compression type bit set in a 104-byte header (implicitly zlib) is refused', async () => {
    const img = patched('plain.qcow2', 'zlib-bit-104.qcow2', (b) => {
      b.writeUInt32BE(b.readUInt32BE(76) | 8, 76);
      b.copy(b, 104, 112, 4096);
      b.writeUInt32BE(104, 100);
    });
    await bothRefuse(img, /Compression type incompatible feature bit must not be set/, 'ECORRUPT', /compression type bit \(3\) set/);
  });

  it('a refcount table of zero clusters is refused', async () => {
    const img = patched('plain.qcow2', 'no-reftable.qcow2', (b) => b.writeUInt32BE(0, 56));
    const e = await bothRefuse(img, /Image does not contain a reference count table/, 'ECORRUPT', /refcount_table_clusters is 0/);
    expect(e).toMatchObject({ field: 'refcount_table_clusters', offset: 56 });
  });

  it('an unaligned snapshot table offset is refused even with no snapshots', async () => {
    const img = patched('plain.qcow2', 'snap-off-unaligned.qcow2', (b) => b.writeBigUInt64BE(8n, 64));
    await bothRefuse(img, /Snapshot table offset invalid/, 'ECORRUPT', /snapshots_offset 8 is not aligned/);
  });

  it('an unaligned L1 table offset is refused even for an empty L1 table', async () => {
    const img = patched('plain.qcow2', 'l1-unaligned-empty.qcow2', (b) => {
      b.writeBigUInt64BE(0n, 24);
      b.writeUInt32BE(0, 36);
      b.writeBigUInt64BE(0x30008n, 40);
    });
    await bothRefuse(img, /Active L1 table offset invalid/, 'ECORRUPT', /l1_table_offset 196616 is not aligned/);
  });

  it('the data_file_raw autoclear bit without an external data file is refused for reading (qemu-img info still opens it)', async () => {
    const img = patched('plain.qcow2', 'raw-no-data-file.qcow2', (b) => b.writeUInt32BE(2, 92));
    expect(qemuInfo(img).ok).toBe(true);
    const q = qemuConvert(img);
    expect(q.ok).toBe(false);
    expect(q.message).toMatch(/data-file-raw requires a data file/);
    const r = await ours(img);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.code).toBe('ECORRUPT');
      expect(r.error.message).toMatch(/autoclear_features has data_file_raw \(bit 1\) set but the image has no external data file/);
    }
  });

  it("a data-file child for an image without an external data file is refused (QEMU: 'data-file' can only be set…)", async () => {
    const q = spawnSync('qemu-img', ['convert', '-O', 'raw', '--image-opts', `driver=qcow2,file.filename=${p('plain.qcow2')},data-file.filename=${p('base.raw')}`, p('qemu-out.raw')], {
      encoding: 'utf8',
    });
    expect(q.status).not.toBe(0);
    expect(q.stderr).toMatch(/'data-file' can only be set for images with an external data file/);
    const e = await layer
      .openDrive({ driver: 'qcow2', file: { driver: 'file', filename: p('plain.qcow2') }, 'data-file': { driver: 'file', filename: p('base.raw') } })
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    expect(e).toBeInstanceOf(BlockError);
    expect(e).toMatchObject({ code: 'EINVAL', field: 'data-file' });
  });

  it('a virtual size that is not a multiple of 512 is rounded down to whole sectors', async () => {
    const img = patched('plain.qcow2', 'odd-size.qcow2', (b) => b.writeBigUInt64BE(1048576n - 100n, 24));
    expect(qemuInfo(img).message).toMatch(/virtual size: .*\(1048064 bytes\)/);
    const r = await bothOpen(img);
    expect(r.length).toBe(1048064);
    expect(r.info.virtualSize).toBe(1048064);
  });
});

describe.skipIf(!available)('qcow2 persistent bitmaps: checked as QEMU checks them when their autoclear bit is set', () => {
  it('valid bitmaps are listed in info', async () => {
    const r = await bothOpen(p('bitmap2.qcow2'));
    expect(r.info.bitmaps).toEqual([
      { name: 'b0', granularity: 65536, flags: 2 },
      { name: 'b1', granularity: 65536, flags: 2 },
    ]);
  });

  it('opens: the bitmaps autoclear bit without a bitmaps extension is ignored', async () => {
    const img = patched('plain.qcow2', 'bm-bit-only.qcow2', (b) => b.writeUInt32BE(1, 92));
    expect(qemuInfo(img).ok).toBe(true);
    const r = await bothOpen(img);
    expect(r.info.bitmaps).toEqual([]);
  });

  it('opens: a bitmaps extension without the autoclear bit is ignored (QEMU warns the bitmaps are inconsistent)', async () => {
    const img = patched('bitmap.qcow2', 'bm-no-bit.qcow2', (b) => b.writeUInt32BE(0, 92));
    expect(qemuConvert(img).message).toMatch(/program lacking bitmap support/);
    const r = await bothOpen(img);
    expect(r.info.bitmaps).toEqual([]);
  });

  it('opens: a bitmaps extension with nb_bitmaps 0 and no autoclear bit is ignored', async () => {
    const img = patched('bitmap.qcow2', 'bm-nb0-no-bit.qcow2', (b) => {
      b.writeUInt32BE(0, bitmapsExt(b));
      b.writeUInt32BE(0, 92);
    });
    const r = await bothOpen(img);
    expect(r.info.bitmaps).toEqual([]);
  });

  it('refused: a bitmaps extension whose length is not 24, even without the autoclear bit', async () => {
    const img = patched('bitmap.qcow2', 'bm-len16.qcow2', (b) => {
      b.writeUInt32BE(16, extension(b, EXT_BITMAPS) + 4);
      b.writeUInt32BE(0, 92);
    });
    await bothRefuse(img, /bitmaps_ext: Invalid extension length/, 'ECORRUPT', /bitmaps extension length 16 is not 24/);
  });

  const refusals: [string, (b: Buffer) => void, RegExp, string, RegExp][] = [
    ['nb_bitmaps 0', (b) => b.writeUInt32BE(0, bitmapsExt(b)), /found bitmaps extension with zero bitmaps/, 'ECORRUPT', /nb_bitmaps is 0/],
    ['nb_bitmaps 65536', (b) => b.writeUInt32BE(65536, bitmapsExt(b)), /exceeding the QEMU supported maximum of 65535/, 'ENOTSUP', /nb_bitmaps 65536 is above the limit of 65535/],
    ['nb_bitmaps 2 with one entry', (b) => b.writeUInt32BE(2, bitmapsExt(b)), /Less bitmaps found than specified/, 'ECORRUPT', /are 1, fewer than the 2 bitmaps/],
    ['a non-zero reserved field', (b) => b.writeUInt32BE(1, bitmapsExt(b) + 4), /Reserved field is not zero/, 'ECORRUPT', /reserved field is not zero/],
    ['an unaligned directory', (b) => b.writeBigUInt64BE(BigInt(bitmapDir(b) + 8), bitmapsExt(b) + 16), /invalid bitmap directory offset/, 'ECORRUPT', /bitmap_directory_offset \d+ is not aligned/],
    ['a directory beyond the end of the file (reads as zeros)', (b) => b.writeBigUInt64BE(1n << 30n, bitmapsExt(b) + 16), /Bitmap '' doesn't satisfy the constraints/, 'ECORRUPT', /bitmap '' .*empty bitmap table/],
    ['a directory of 0 bytes', (b) => b.writeBigUInt64BE(0n, bitmapsExt(b) + 8), /bitmap directory size is zero/, 'ECORRUPT', /bitmap_directory_size is 0/],
    ['a directory above the size limit', (b) => b.writeBigUInt64BE(64n * 1024n * 1024n, bitmapsExt(b) + 8), /exceeds the maximum supported size \(67107840\)/, 'ENOTSUP', /bitmap_directory_size 67108864 is above the limit of 67107840/],
    ['a directory cut inside an entry', (b) => b.writeBigUInt64BE(8n, bitmapsExt(b) + 8), /Broken bitmap directory/, 'ECORRUPT', /entry runs past the end of the directory/],
    ['a directory with one entry more than announced', (b) => b.writeBigUInt64BE(b.readBigUInt64BE(bitmapsExt(b) + 8) + 24n, bitmapsExt(b) + 8), /More bitmaps found than specified/, 'ECORRUPT', /one more than the 1 bitmaps/],
    ['an entry with extra data', (b) => b.writeUInt32BE(8, bitmapDir(b) + 20), /Broken bitmap directory/, 'ECORRUPT', /runs past the end of the directory/],
    ['a bitmap table at offset 0', (b) => b.writeBigUInt64BE(0n, bitmapDir(b)), /Bitmap 'b0' doesn't satisfy the constraints/, 'ECORRUPT', /bitmap 'b0' has its table at 0/],
    ['reserved entry flags', (b) => b.writeUInt32BE(6, bitmapDir(b) + 12), /Bitmap 'b0' doesn't satisfy the constraints/, 'ECORRUPT', /reserved flags/],
    ['bitmap type 2', (b) => b.writeUInt8(2, bitmapDir(b) + 16), /Bitmap 'b0' doesn't satisfy the constraints/, 'ECORRUPT', /type 2 is not 1/],
    ['granularity bits 8', (b) => b.writeUInt8(8, bitmapDir(b) + 17), /Bitmap 'b0' doesn't satisfy the constraints/, 'ECORRUPT', /granularity bits 8/],
    ['a table larger than the disk needs', (b) => b.writeUInt32BE(2, bitmapDir(b) + 8), /Could not read bitmap 'b0' from image/, 'ECORRUPT', /table has 2 entries; a disk of 1048576 bytes needs 1/],
    ['a table covering more than 512 MiB', (b) => b.writeUInt32BE(8193, bitmapDir(b) + 8), /Bitmap 'b0' doesn't satisfy the constraints/, 'ECORRUPT', /above 536870912/],
    [
      'reserved bits in a bitmap table entry',
      (b) => b.writeUInt8(2, Number(b.readBigUInt64BE(bitmapDir(b))) + 7),
      /Could not read bitmap_table table from image for bitmap 'b0'/,
      'ECORRUPT',
      /table entry of bitmap 'b0' has reserved bits set/,
    ],
    [
      'an unaligned data cluster in a bitmap table',
      (b) => b.writeBigUInt64BE(0x10200n, Number(b.readBigUInt64BE(bitmapDir(b)))),
      /Could not read bitmap_table table from image for bitmap 'b0'/,
      'ECORRUPT',
      /points to an unaligned cluster at 66048/,
    ],
  ];
  for (const [what, patch, qemuMessage, code, message] of refusals) {
    it(`refused: ${what}`, async () => {
      await bothRefuse(patched('bitmap.qcow2', `bm-${what.replace(/\W+/g, '-')}.qcow2`, patch), qemuMessage, code, message);
    });
  }

  it('refused: two bitmaps with the same name', async () => {
    const img = patched('bitmap2.qcow2', 'bm-dup.qcow2', (b) => b.write('b0', bitmapDir(b) + 32 + 24));
    await bothRefuse(img, /Bitmap already exists: b0/, 'ECORRUPT', /bitmap 'b0' has the name of an earlier bitmap/);
  });

  const opens: [string, (b: Buffer) => void][] = [
    ['a bitmap marked in use (loaded as inconsistent)', (b) => b.writeUInt32BE(3, bitmapDir(b) + 12)],
    ['a bitmap table beyond the end of the file (reads as zeros)', (b) => b.writeBigUInt64BE(1n << 30n, bitmapDir(b))],
    ['a bitmap table entry with the all-ones flag', (b) => b.writeBigUInt64BE(1n, Number(b.readBigUInt64BE(bitmapDir(b))))],
  ];
  for (const [what, patch] of opens) {
    it(`opens: ${what}`, async () => {
      const r = await bothOpen(patched('bitmap.qcow2', `bm-ok-${what.replace(/\W+/g, '-')}.qcow2`, patch));
      expect((r.info.bitmaps as { name: string }[]).map((b) => b.name)).toEqual(['b0']);
    });
  }
});

describe.skipIf(!available)('qcow2 internal snapshots: a broken entry fails only when that snapshot is opened, as in QEMU', () => {
  const lazy: [string, (b: Buffer) => void, RegExp, RegExp][] = [
    ['an unaligned snapshot L1 table', (b) => b.writeBigUInt64BE(b.readBigUInt64BE(snapEntry(b)) + 8n, snapEntry(b)), /Snapshot L1 table offset invalid/, /l1_table_offset \d+ of snapshot 's1' is not aligned/],
    ['a snapshot L1 table above 32 MiB', (b) => b.writeUInt32BE(0x400001, snapEntry(b) + 8), /Snapshot L1 table too large/, /l1_size 4194305 of snapshot 's1' exceeds/],
  ];
  for (const [what, patch, qemuMessage, message] of lazy) {
    it(`${what}: the active layer opens and reads; opening the snapshot is refused`, async () => {
      const img = patched('snap.qcow2', `snap-${what.replace(/\W+/g, '-')}.qcow2`, patch);
      expect(qemuInfo(img).ok).toBe(true);
      const r = await bothOpen(img);
      expect((r.info.snapshots as { name: string }[]).map((s) => s.name)).toEqual(['s1']);
      await bothRefuse(img, qemuMessage, 'ECORRUPT', message, 's1');
    });
  }

  const fine: [string, (b: Buffer) => void][] = [
    ['a snapshot L1 table beyond the end of the file (reads as zeros)', (b) => b.writeBigUInt64BE(1n << 30n, snapEntry(b))],
    ['a snapshot L1 table of 0 entries', (b) => b.writeUInt32BE(0, snapEntry(b) + 8)],
    ['a snapshot disk size of 1 TiB, larger than its L1 table covers', (b) => b.writeBigUInt64BE(1n << 40n, snapEntry(b) + 48)],
  ];
  for (const [what, patch] of fine) {
    it(`${what}: both the active layer and the snapshot open and read as qemu-img reads them`, async () => {
      const img = patched('snap.qcow2', `snap-ok-${what.replace(/\W+/g, '-')}.qcow2`, patch);
      await bothOpen(img);
      await bothOpen(img, 's1');
    });
  }

  it('a snapshot entry running past the end of the file reads as zeros: the image and the snapshot open', async () => {
    // The entry is copied into a cluster appended to the file, its name made 65535 bytes long.
    const src = fs.readFileSync(p('snap.qcow2'));
    const cluster = Buffer.alloc(65536);
    src.copy(cluster, 0, snapEntry(src), snapEntry(src) + 72);
    cluster.writeUInt16BE(0xffff, 14);
    const b = Buffer.concat([src, cluster]);
    b.writeBigUInt64BE(BigInt(src.length), 64);
    fs.writeFileSync(p('snap-long-name.qcow2'), b);
    const r = await bothOpen(p('snap-long-name.qcow2'));
    expect((r.info.snapshots as { name: string }[]).map((s) => s.name)).toEqual(['s1']);
    await bothOpen(p('snap-long-name.qcow2'), 's1');
  });

  it('a snapshot taken before a resize is read with the current virtual size, as qemu-img convert -l does', async () => {
    for (const [from, to] of [
      ['1M', '2M'],
      ['2M', '1M'],
    ]) {
      const img = p(`resized-${from}-${to}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', img, from);
      qemuIo(img, ['write -P 0x33 0 1M']);
      qemuImg('snapshot', '-c', 's1', img);
      qemuImg('resize', '-q', ...(to === '1M' ? ['--shrink'] : []), img, to);
      const r = await bothOpen(img, 's1');
      expect(r.length).toBe(to === '1M' ? 1 << 20 : 2 << 20);
    }
  });
});
