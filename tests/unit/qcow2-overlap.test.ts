/**
 * QEMU's metadata overlap check (qcow2_pre_write_overlap_check, overlap-check=cached): hostile
 * images whose refcounts free their own metadata, or whose tables point a write at it. The
 * write that would overwrite metadata fails with ECORRUPT, the metadata keeps its bytes, the
 * header gets the corrupt bit, and the node takes no more writes.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BlockError, createImage, type Drive } from '../../src/index.js';
import { imageSuite } from '../helpers/image-suite.js';
import { COPIED, Qcow2Patcher } from '../helpers/qcow2-patch.js';

const suite = imageSuite('blocklayer-qcow2-overlap-');
const { p, layer } = suite;
const CS = 65536;
const CORRUPT_BIT = 2;

const open = (image: string, readOnly = false) => layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image, readOnly }, readOnly });

/** Where the metadata of a fresh image is. */
function layout(image: string) {
  const b = fs.readFileSync(image);
  const refcountTable = Number(b.readBigUInt64BE(48));
  return { l1: Number(b.readBigUInt64BE(40)), refcountTable, refcountBlock: Number(b.readBigUInt64BE(refcountTable)), snapshots: Number(b.readBigUInt64BE(64)) };
}

const clusterBytes = (image: string, offset: number) => Buffer.from(fs.readFileSync(image).subarray(offset, offset + CS));
const corruptBit = (image: string) => fs.readFileSync(image).readUInt32BE(76) & CORRUPT_BIT;

async function fresh(name: string, prepare?: (d: Drive) => Promise<void>): Promise<string> {
  const image = p(name);
  await createImage(image, { format: 'qcow2', size: '16M' });
  if (prepare) {
    const d = await open(image);
    await prepare(d);
    await d.close();
  }
  return image;
}

function patch(image: string, edit: (x: Qcow2Patcher) => void): void {
  const x = new Qcow2Patcher(image);
  edit(x);
  x.save();
}

/** The write rejects with the overlap error naming `what`; the metadata cluster at `at` keeps its bytes; the header is marked corrupt; later writes are refused. */
async function expectRefused(image: string, at: number, what: string, write: (d: Drive) => Promise<void>): Promise<void> {
  const before = clusterBytes(image, at);
  const d = await open(image);
  const e = await write(d).then(
    () => new Error('the write succeeded'),
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BlockError);
  expect(e).toMatchObject({ code: 'ECORRUPT', message: `qcow2: Preventing invalid write on metadata (overlaps with ${what}); image marked as corrupt` });
  // The mark is on disk once the request has failed (QEMU marks, then fails the write).
  expect(corruptBit(image)).toBe(CORRUPT_BIT);
  // Any later write is refused, allocating or not.
  await expect(d.write(0, Buffer.alloc(512, 1))).rejects.toMatchObject({ code: 'ECORRUPT', message: /marked corrupt and takes no more writes/ });
  await expect(d.writeZeroes(CS, CS)).rejects.toMatchObject({ code: 'ECORRUPT' });
  await expect(d.discard(CS, CS)).rejects.toMatchObject({ code: 'ECORRUPT' });
  // Nothing more is written: a flush is refused (it cannot make earlier writes durable), a close writes nothing.
  await expect(d.flush()).rejects.toMatchObject({ code: 'ECORRUPT' });
  await d.close();
  expect(clusterBytes(image, at)).toEqual(before);
  expect(corruptBit(image)).toBe(CORRUPT_BIT);
  // As QEMU: a corrupt image opens read-only only.
  await expect(open(image)).rejects.toMatchObject({ code: 'ENOTSUP', message: /marked corrupt/ });
  const ro = await open(image, true);
  await ro.close();
}

describe('qcow2 metadata overlap check', () => {
  it('refuses an L2 table allocated over the active L1 table whose refcount reads 0', async () => {
    const image = await fresh('l1.qcow2');
    const { l1 } = layout(image);
    patch(image, (x) => x.setRefcount(l1 / CS, 0));
    await expectRefused(image, l1, 'active L1 table', (d) => d.write(0, Buffer.alloc(4096, 0xaa)));
  });

  it('refuses data allocated over a refcount block whose refcount reads 0', async () => {
    const image = await fresh('refblock.qcow2', (d) => d.write(0, Buffer.alloc(512, 1)));
    const { refcountBlock } = layout(image);
    patch(image, (x) => x.setRefcount(refcountBlock / CS, 0));
    await expectRefused(image, refcountBlock, 'refcount block', (d) => d.write(5 * CS, Buffer.alloc(CS, 0xbb)));
  });

  it('refuses data allocated over the refcount table whose refcount reads 0', async () => {
    const image = await fresh('reftable.qcow2', (d) => d.write(0, Buffer.alloc(512, 1)));
    const { refcountTable } = layout(image);
    patch(image, (x) => x.setRefcount(refcountTable / CS, 0));
    await expectRefused(image, refcountTable, 'refcount table', (d) => d.write(7 * CS, Buffer.alloc(CS, 0xbb)));
  });

  it('refuses data allocated over an active L2 table whose refcount reads 0', async () => {
    const image = await fresh('l2.qcow2', (d) => d.write(0, Buffer.alloc(CS, 1)));
    const l2 = new Qcow2Patcher(image).l2Offset();
    patch(image, (x) => x.setRefcount(l2 / CS, 0));
    await expectRefused(image, l2, 'active L2 table', (d) => d.write(3 * CS, Buffer.alloc(CS, 0xcc)));
  });

  it('refuses data allocated over the snapshot table whose refcount reads 0', async () => {
    const image = await fresh('snap.qcow2', async (d) => {
      await d.write(0, Buffer.alloc(CS, 1));
      await d.node.snapshots!.create({ name: 's1' });
    });
    const { snapshots } = layout(image);
    expect(snapshots).toBeGreaterThan(0);
    patch(image, (x) => x.setRefcount(snapshots / CS, 0));
    // A guest cluster not yet allocated: the allocator's first free cluster is the snapshot table.
    await expectRefused(image, snapshots, 'snapshot table', (d) => d.write(9 * CS, Buffer.alloc(CS, 0xdd)));
  });

  it("refuses data allocated over a snapshot's L1 table whose refcount reads 0", async () => {
    const image = await fresh('snap-l1.qcow2', async (d) => {
      await d.write(0, Buffer.alloc(CS, 1));
      await d.node.snapshots!.create({ name: 's1' });
    });
    const { snapshots } = layout(image);
    const snapL1 = Number(fs.readFileSync(image).readBigUInt64BE(snapshots));
    patch(image, (x) => x.setRefcount(snapL1 / CS, 0));
    await expectRefused(image, snapL1, 'inactive L1 table', (d) => d.write(9 * CS, Buffer.alloc(CS, 0xdd)));
  });

  it('refuses an in-place write whose L2 entry points (COPIED) at the active L1 table', async () => {
    const image = await fresh('inplace.qcow2', (d) => d.write(0, Buffer.alloc(CS, 1)));
    const { l1 } = layout(image);
    patch(image, (x) => x.setL2Entry(1, COPIED | BigInt(l1)));
    await expectRefused(image, l1, 'active L1 table', async (d) => {
      // Reads are not refused: the guest sees the L1 table's bytes as data, as it does in QEMU.
      await d.read(CS, 512);
      await d.write(CS + 512, Buffer.alloc(512, 0xee));
    });
  });

  it('refuses to write back an L2 table that an L1 entry (COPIED) places over the refcount table', async () => {
    const image = await fresh('l2-on-reftable.qcow2');
    const { l1, refcountTable } = layout(image);
    patch(image, (x) => x.buf.writeBigUInt64BE(COPIED | BigInt(refcountTable), l1));
    await expectRefused(image, refcountTable, 'refcount table', async (d) => {
      // The write lands in a new data cluster and its entry goes into the "L2 table" in the cache; the write-back is refused.
      await d.write(0, Buffer.alloc(CS, 0x5a));
      await d.flush();
    });
  });

  it('refuses to use a refcount block the refcount table places over the active L1 table', async () => {
    const image = await fresh('refblock-on-l1.qcow2', (d) => d.write(0, Buffer.alloc(512, 1)));
    const { l1, refcountTable } = layout(image);
    // Refcount table entry 0 points at the L1 table: the next allocation would read (and write back) its block there.
    patch(image, (x) => x.buf.writeBigUInt64BE(BigInt(l1), refcountTable));
    await expectRefused(image, l1, 'active L1 table', (d) => d.write(2 * CS, Buffer.alloc(CS, 0xab)));
  });

  it('a healthy image with a snapshot, a resize and writes everywhere never trips the check', async () => {
    const image = await fresh('healthy.qcow2');
    const d = await open(image);
    for (let i = 0; i < 40; i++) await d.write(((i * 7) % 256) * CS, Buffer.alloc(CS, i));
    await d.node.snapshots!.create({ name: 'a' });
    for (let i = 0; i < 40; i++) await d.write(((i * 5) % 256) * CS + 512, Buffer.alloc(4096, i + 1));
    await d.resize(64 << 20);
    await d.write((60 << 20) + 7, Buffer.alloc(3 * CS, 9));
    await d.node.snapshots!.delete(undefined, 'a');
    await d.discard(0, 8 * CS);
    for (let i = 0; i < 40; i++) await d.write(i * CS, Buffer.alloc(CS, 0x40 + i));
    await d.close();
    expect(corruptBit(image)).toBe(0);
  });
});
