import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, snapshotImage } from '../../src/index.js';
import { haveQemuTools } from '../helpers/qemu-images.js';

/**
 * qcow2 internal snapshots written by us, judged by qemu-img (list, convert -l, apply, delete,
 * check), and snapshots qemu-img wrote, listed, applied and deleted by us.
 */

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img missing in CI');
if (!available) console.log('qcow2 snapshot tests skipped: install qemu-utils');

const KiB = 1024;
const layer = new BlockLayer();
let dir: string;
const p = (name: string) => path.join(dir, name);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-snapshot-'));
});
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function qemuImg(...args: string[]): string {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8', cwd: dir });
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** qemu-img check's verdict (no -U: the image must be closed, as a clean one is). */
function check(image: string): { corruptions: number; leaks: number; errors: number } {
  const r = spawnSync('qemu-img', ['check', '--output=json', image], { encoding: 'utf8', cwd: dir });
  const j = JSON.parse(r.stdout) as Record<string, number>;
  return { corruptions: j.corruptions ?? 0, leaks: j.leaks ?? 0, errors: j['check-errors'] ?? 0 };
}
const CLEAN = { corruptions: 0, leaks: 0, errors: 0 };

/** The guest view according to qemu-img convert (of a snapshot with `-l`). */
function qemuContent(image: string, snapshot?: string): Buffer {
  const out = p('out.raw');
  qemuImg('convert', '-O', 'raw', ...(snapshot ? ['-l', `snapshot.name=${snapshot}`] : []), image, out);
  return fs.readFileSync(out);
}

/** qemu-img snapshot -l's rows as [id, name]. */
function qemuList(image: string): [string, string][] {
  const info = JSON.parse(qemuImg('info', '--output=json', image)) as { snapshots?: { id: string; name: string }[] };
  return (info.snapshots ?? []).map((s) => [s.id, s.name]);
}

const open = (image: string, extra: Record<string, unknown> = {}) => layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image }, ...extra });

async function contentOf(d: Drive): Promise<Buffer> {
  const b = Buffer.alloc(d.length);
  await d.read(0, b);
  return b;
}

function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 17 + (i >> 9)) & 0xff;
  return b;
}

/** Image kinds: what the snapshot code must walk (standard, extended L2, v2, compressed clusters, small clusters over several L2 tables). */
const KINDS: { name: string; create: string[]; size: string; compressed?: boolean }[] = [
  { name: 'default', create: [], size: '4M' },
  { name: 'extended L2', create: ['-o', 'extended_l2=on,cluster_size=128k'], size: '8M' },
  { name: 'v2 (compat 0.10)', create: ['-o', 'compat=0.10'], size: '4M' },
  { name: 'compressed clusters', create: [], size: '4M', compressed: true },
  { name: '4k clusters over several L2 tables', create: ['-o', 'cluster_size=4k'], size: '8M' },
  { name: 'lazy refcounts, 8-bit refcounts', create: ['-o', 'lazy_refcounts=on,refcount_bits=8'], size: '4M' },
];

describe.skipIf(!available)('qcow2 internal snapshots we write, as qemu-img sees them', () => {
  for (const kind of KINDS) {
    it(`${kind.name}: create, write after, list, convert -l, apply and delete by qemu-img; check clean at each step`, async () => {
      const img = p(`ours-${kind.name.replace(/\W+/g, '-')}.qcow2`);
      if (kind.compressed) {
        const raw = p('seed.raw');
        fs.writeFileSync(raw, Buffer.concat([Buffer.from(pattern(1024 * KiB, 1)), Buffer.alloc(3 * 1024 * KiB)]));
        qemuImg('convert', '-c', '-O', 'qcow2', raw, img);
      } else {
        qemuImg('create', '-f', 'qcow2', ...kind.create, img, kind.size);
        spawnSync('qemu-io', ['-c', 'write -P 0x5a 0 700k', img]);
      }
      const d = await open(img);
      await d.write(64 * KiB + 100, pattern(300 * KiB, 2));
      const snaps = d.node.snapshots!;
      const first = await snaps.create({ name: 'first' });
      expect(first).toMatchObject({ id: '1', name: 'first', size: d.length, vmStateSize: 0, vmClockNs: 0, icount: 0 });
      const atFirst = await contentOf(d);
      // A guest writing after the snapshot: in shared clusters, partly and wholly, and beyond.
      await d.write(0, pattern(10 * KiB, 3));
      await d.write(200 * KiB, pattern(512 * KiB, 4));
      await d.writeZeroes(1024 * KiB, 64 * KiB);
      await d.write(d.length - 4 * KiB, pattern(4 * KiB, 5));
      const second = await snaps.create({ name: 'second' });
      expect(second.id).toBe('2');
      const atSecond = await contentOf(d);
      await d.write(300 * KiB, pattern(100 * KiB, 6));
      await d.discard(0, 256 * KiB);
      const current = await contentOf(d);
      await d.close();

      expect(check(img)).toEqual(CLEAN);
      expect(qemuList(img)).toEqual([
        ['1', 'first'],
        ['2', 'second'],
      ]);
      expect(qemuContent(img, 'first').equals(atFirst)).toBe(true);
      expect(qemuContent(img, 'second').equals(atSecond)).toBe(true);
      expect(qemuContent(img).equals(current)).toBe(true);
      // Our read-only open of a snapshot agrees.
      const s1 = await open(img, { snapshot: 'first', readOnly: true });
      expect((await contentOf(s1)).equals(atFirst)).toBe(true);
      await s1.close();

      qemuImg('snapshot', '-a', 'first', img);
      expect(check(img)).toEqual(CLEAN);
      expect(qemuContent(img).equals(atFirst)).toBe(true);
      qemuImg('snapshot', '-d', 'first', img);
      expect(check(img)).toEqual(CLEAN);
      expect(qemuList(img)).toEqual([['2', 'second']]);
      expect(qemuContent(img).equals(atFirst)).toBe(true);
      expect(qemuContent(img, 'second').equals(atSecond)).toBe(true);
      qemuImg('snapshot', '-d', 'second', img);
      expect(check(img)).toEqual(CLEAN);
      expect(qemuContent(img).equals(atFirst)).toBe(true);
    });
  }

  it("qemu-img's snapshots: we list, apply and delete them; writes in between keep every snapshot's data", async () => {
    const img = p('theirs.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '2M');
    spawnSync('qemu-io', ['-c', 'write -P 0x11 0 1M', img]);
    qemuImg('snapshot', '-c', 'a', img);
    const atA = qemuContent(img);
    spawnSync('qemu-io', ['-c', 'write -P 0x22 512k 1M', img]);
    qemuImg('snapshot', '-c', 'b', img);
    const atB = qemuContent(img);
    spawnSync('qemu-io', ['-c', 'write -P 0x33 0 64k', img]);

    const listed = await snapshotImage(img, { list: true });
    expect(listed.snapshots.map((s) => [s.id, s.name, s.icount])).toEqual([
      ['1', 'a', 0],
      ['2', 'b', 0],
    ]);
    const applied = await snapshotImage(img, { apply: 'a' });
    expect(applied.snapshot?.name).toBe('a');
    expect(check(img)).toEqual(CLEAN);
    expect(qemuContent(img).equals(atA)).toBe(true);
    // Written after the revert: snapshot a keeps its data.
    const d = await open(img);
    await d.write(4 * KiB, pattern(700 * KiB, 7));
    const now = await contentOf(d);
    await d.close();
    expect(check(img)).toEqual(CLEAN);
    expect(qemuContent(img, 'a').equals(atA)).toBe(true);
    expect(qemuContent(img, 'b').equals(atB)).toBe(true);
    // Apply by id.
    await snapshotImage(img, { apply: '2' });
    expect(qemuContent(img).equals(atB)).toBe(true);
    expect(check(img)).toEqual(CLEAN);
    const deleted = await snapshotImage(img, { delete: 'a' });
    expect(deleted.snapshot?.id).toBe('1');
    expect(deleted.snapshots.map((s) => s.name)).toEqual(['b']);
    expect(check(img)).toEqual(CLEAN);
    await snapshotImage(img, { delete: 'b' });
    expect(check(img)).toEqual(CLEAN);
    expect(qemuList(img)).toEqual([]);
    expect(qemuContent(img).equals(atB)).toBe(true);
    expect(now.equals(atB)).toBe(false);
  });

  it('a snapshot taken while the guest writes: a write issued before it is all in it, one issued after is not in it at all', async () => {
    const img = p('concurrent.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4k', img, '8M');
    const d = await open(img);
    const node = d.node;
    await node.write(0, new Uint8Array(6 << 20).fill(0x01));
    const before = node.write(0, new Uint8Array(6 << 20).fill(0x11));
    const taken = node.snapshots!.create({ name: 'mid' });
    const after = node.write(1 << 20, new Uint8Array(4 << 20).fill(0x22));
    await Promise.all([before, taken, after]);
    const now = await contentOf(d);
    await d.close();
    const snap = qemuContent(img, 'mid');
    const expected = Buffer.alloc(8 << 20);
    expected.fill(0x11, 0, 6 << 20);
    expect(snap.equals(expected)).toBe(true);
    expected.fill(0x22, 1 << 20, 5 << 20);
    expect(now.equals(expected)).toBe(true);
    expect(check(img)).toEqual(CLEAN);
  });

  it('hostile snapshot entries (an unaligned or huge L1 table, an L2 table past the end) are refused with ECORRUPT before anything changes', async () => {
    const base = p('hostile-base.qcow2');
    qemuImg('create', '-f', 'qcow2', base, '1M');
    spawnSync('qemu-io', ['-c', 'write -P 0x44 0 128k', base]);
    qemuImg('snapshot', '-c', 'victim', base);
    const before = qemuContent(base);
    const patched = (name: string, edit: (b: Buffer, entry: number) => void) => {
      const img = p(name);
      const b = fs.readFileSync(base);
      edit(b, Number(b.readBigUInt64BE(64)));
      fs.writeFileSync(img, b);
      return img;
    };
    const unaligned = patched('unaligned.qcow2', (b, e) => b.writeBigUInt64BE(b.readBigUInt64BE(e) + 512n, e));
    const huge = patched('huge.qcow2', (b, e) => b.writeUInt32BE(0x7fffffff, e + 8));
    const pastEnd = patched('past-end.qcow2', (b, e) => {
      const l1 = Number(b.readBigUInt64BE(e));
      b.writeBigUInt64BE(1n << 40n, l1);
    });
    for (const img of [unaligned, huge, pastEnd]) {
      for (const action of [{ apply: 'victim' }, { delete: 'victim' }] as const) {
        if (img === pastEnd && 'delete' in action) continue; // its table entry itself is sound: delete drops it (judged below)
        await expect(snapshotImage(img, action), `${path.basename(img)} ${JSON.stringify(action)}`).rejects.toMatchObject({ code: 'ECORRUPT' });
        expect(qemuList(img)).toEqual([['1', 'victim']]);
        expect(qemuContent(img).equals(before)).toBe(true);
      }
    }
    // Deleting the snapshot whose L1 points past the end: out of the table first, then the walk refuses.
    await expect(snapshotImage(pastEnd, { delete: 'victim' })).rejects.toMatchObject({ code: 'ECORRUPT' });
    expect(qemuList(pastEnd)).toEqual([]);
    expect(qemuContent(pastEnd).equals(before)).toBe(true);
    expect(check(pastEnd).corruptions).toBe(0);
  });

  it('ids as QEMU numbers them, duplicate names allowed (qemu-img allows them), lookups by id and by name', async () => {
    const img = p('ids.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '1M');
    await snapshotImage(img, { create: 'x' });
    qemuImg('snapshot', '-c', 'x', img);
    await snapshotImage(img, { create: '7' });
    expect(qemuList(img)).toEqual([
      ['1', 'x'],
      ['2', 'x'],
      ['3', '7'],
    ]);
    // delete finds by name only (the first 'x'); a name that is only an id is not found
    await snapshotImage(img, { delete: 'x' });
    await expect(snapshotImage(img, { delete: '3' })).rejects.toMatchObject({ code: 'ENOENT', message: "Could not delete snapshot '3': snapshot not found" });
    await expect(snapshotImage(img, { apply: 'nope' })).rejects.toMatchObject({ code: 'ENOENT', message: "Could not apply snapshot 'nope': Failed to load snapshot: No such file or directory" });
    // a new id is one more than the largest
    qemuImg('snapshot', '-d', 'x', img);
    await snapshotImage(img, { create: 'y' });
    expect(qemuList(img)).toEqual([
      ['3', '7'],
      ['4', 'y'],
    ]);
    const d = await open(img);
    await expect(d.node.snapshots!.create({ name: 'dup', id: '4' })).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(d.node.snapshots!.delete('3', 'y')).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await d.node.snapshots!.delete('3', '7')).name).toBe('7');
    await d.close();
    expect(check(img)).toEqual(CLEAN);
  });

  it('raw images have none to list and refuse the rest with qemu-img words; a read-only node refuses changes', async () => {
    const raw = p('plain.img');
    fs.writeFileSync(raw, Buffer.alloc(1 << 20));
    expect((await snapshotImage(raw, { list: true, }, { format: 'raw' })).snapshots).toEqual([]);
    await expect(snapshotImage(raw, { create: 's' }, { format: 'raw' })).rejects.toMatchObject({ code: 'ENOTSUP', message: "Could not create snapshot 's': -95 (Operation not supported)" });
    await expect(snapshotImage(raw, { apply: 's' }, { format: 'raw' })).rejects.toMatchObject({ message: "Could not apply snapshot 's': Block driver does not support snapshots" });
    await expect(snapshotImage(raw, { delete: 's' }, { format: 'raw' })).rejects.toMatchObject({ message: "Could not delete snapshot 's': snapshot not found" });
    const img = p('ro.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '1M');
    const d = await open(img, { readOnly: true });
    await expect(d.node.snapshots!.create({ name: 'n' })).rejects.toMatchObject({ code: 'EROFS' });
    await d.close();
  });

  it('1-bit refcounts cannot count a second reference: create fails as in qemu-img, the image stays sound', async () => {
    const img = p('refcount1.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'refcount_bits=1', img, '1M');
    spawnSync('qemu-io', ['-c', 'write -P 0x11 0 64k', img]);
    await expect(snapshotImage(img, { create: 'x' })).rejects.toMatchObject({ message: "Could not create snapshot 'x': -22 (Invalid argument)" });
    expect(check(img).corruptions).toBe(0);
    expect(qemuList(img)).toEqual([]);
  });

  it('an image with an external data file refuses internal snapshots (ENOTSUP), as QEMU does', async () => {
    const img = p('ext.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', `data_file=${p('ext.data')}`, img, '1M');
    await expect(snapshotImage(img, { create: 's' })).rejects.toMatchObject({ code: 'ENOTSUP' });
  });
});
