import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { imageSuite } from '../helpers/image-suite.js';
import { Qcow2Patcher } from '../helpers/qcow2-patch.js';
import { haveQemuTools, qemuImg, qemuIo } from '../helpers/qemu-images.js';

const available = haveQemuTools();
if (!available) console.log('resize tests skipped: install qemu-utils to run them');

const suite = imageSuite('blocklayer-resize-');
const { p, layer } = suite;
const TiB = 2 ** 40;
const MiB = 2 ** 20;

const open = (image: string, format = 'qcow2', readOnly = false) => layer.openDrive({ driver: format, readOnly, file: { driver: 'file', filename: image } });

/** qemu-img check's verdict (corruptions, leaks, errors). */
function check(image: string): { corruptions: number; leaks: number; errors: number } {
  const r = spawnSync('qemu-img', ['check', '--output=json', image], { encoding: 'utf8', cwd: suite.dir });
  const j = JSON.parse(r.stdout) as Record<string, number>;
  return { corruptions: j.corruptions ?? 0, leaks: j.leaks ?? 0, errors: j['check-errors'] ?? 0 };
}
const virtualSize = (image: string) => (JSON.parse(qemuImg('info', '-U', '--output=json', image)) as { 'virtual-size': number })['virtual-size'];
/** qemu-io read -P: exits 0 and prints no "Pattern verification failed" when the bytes match. */
function qemuReads(image: string, pattern: number, offset: number, length: number, format = 'qcow2'): boolean {
  const r = spawnSync('qemu-io', ['-f', format, '-c', `read -P ${pattern} ${offset} ${length}`, image], { encoding: 'utf8', cwd: suite.dir });
  return r.status === 0 && !r.stdout.includes('failed') && !r.stderr.includes('failed');
}
function compareRaw(reference: string, image: string): { code: number | null; out: string } {
  const r = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', reference, image], { encoding: 'utf8', cwd: suite.dir });
  return { code: r.status, out: r.stdout + r.stderr };
}

describe.skipIf(!available)('qcow2 resize, read back by qemu-img and qemu-io', () => {
  it('grows a 1 MiB image to 3 TiB: the L1 table moves, data near the old end and beyond the old L1 coverage survive', async () => {
    const img = p('grow.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '1M');
    qemuIo(img, ['write -P 0x5a 983040 65536']);
    const d = await open(img);
    const events: { oldSize: number; newSize: number }[] = [];
    d.on('resize', (e) => events.push(e));
    await d.resize(3 * TiB);
    expect(d.length).toBe(3 * TiB);
    expect(events).toEqual([{ oldSize: MiB, newSize: 3 * TiB }]);
    await d.write(2 * TiB + 4096, new Uint8Array(8192).fill(0xa7));
    await d.write(3 * TiB - 65536, new Uint8Array(65536).fill(0x3c));
    await d.close();
    expect(virtualSize(img)).toBe(3 * TiB);
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
    expect(qemuReads(img, 0x5a, 983040, 65536)).toBe(true);
    expect(qemuReads(img, 0, MiB, 65536)).toBe(true);
    expect(qemuReads(img, 0xa7, 2 * TiB + 4096, 8192)).toBe(true);
    expect(qemuReads(img, 0x3c, 3 * TiB - 65536, 65536)).toBe(true);
    expect(qemuReads(img, 0, 2 * TiB + 12288, 4096)).toBe(true);
  });

  it('shrinks across L2 tables (4 KiB clusters) to an unaligned size: no leak, the kept part equals qemu-img convert of the original', async () => {
    const img = p('shrink.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '16M');
    for (const [i, at] of [1, 5, 9, 15].entries()) qemuIo(img, [`write -P ${0x11 * (i + 1)} ${at * MiB - 6144} 12288`]);
    qemuIo(img, ['write -c -P 0x77 12582912 4096']);
    qemuImg('convert', '-O', 'raw', img, p('shrink.raw'));
    const newSize = 6 * MiB - 4096 + 512;
    fs.truncateSync(p('shrink.raw'), newSize);
    const d = await open(img);
    await expect(d.resize(newSize)).rejects.toMatchObject({ code: 'EINVAL', field: 'size' });
    await d.resize(newSize, { shrink: true });
    expect(d.length).toBe(newSize);
    await d.close();
    expect(virtualSize(img)).toBe(newSize);
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
    expect(compareRaw(p('shrink.raw'), img).code).toBe(0);
    // the file ends after its last cluster in use, as QEMU leaves it (qemu-img check's image end offset)
    const end = (JSON.parse(spawnSync('qemu-img', ['check', '--output=json', img], { encoding: 'utf8' }).stdout) as { 'image-end-offset': number })['image-end-offset'];
    expect(fs.statSync(img).size).toBe(end);
  });

  it('grows a shrunk image again: what lay past the old end reads as zeros (qemu-img compare against a raw resized the same way)', async () => {
    const img = p('regrow.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '4M');
    qemuIo(img, ['write -P 0x42 0 4M']);
    const d = await open(img);
    await d.resize(MiB + 512, { shrink: true });
    await d.resize(8 * MiB);
    await d.close();
    const raw = p('regrow.raw');
    fs.writeFileSync(raw, Buffer.alloc(MiB + 512, 0x42));
    fs.truncateSync(raw, 8 * MiB);
    expect(compareRaw(raw, img).code).toBe(0);
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
  });

  it('shrinks a v3 image with an internal snapshot (as QEMU allows): the snapshot keeps its clusters', async () => {
    const img = p('snap.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '8M');
    qemuIo(img, ['write -P 0x61 0 8M']);
    qemuImg('snapshot', '-c', 's1', img);
    qemuIo(img, ['write -P 0x62 6M 1M']);
    const d = await open(img);
    await d.resize(2 * MiB, { shrink: true });
    await d.close();
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
    expect(virtualSize(img)).toBe(2 * MiB);
    // Reverting to the snapshot brings back its size (v3 records it) and every byte of it.
    qemuImg('snapshot', '-a', 's1', img);
    expect(virtualSize(img)).toBe(8 * MiB);
    expect(qemuReads(img, 0x61, 0, 8 * MiB)).toBe(true);
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
  });

  it('grows an overlay over a longer backing file: the new part reads as zeros, not the backing bytes (QEMU)', async () => {
    const base = p('base.qcow2');
    const top = p('top.qcow2');
    qemuImg('create', '-f', 'qcow2', base, '4M');
    qemuIo(base, ['write -P 0x99 0 4M']);
    qemuImg('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top, '1M');
    const d = await open(top);
    await d.resize(6 * MiB);
    await d.close();
    expect(qemuReads(top, 0x99, 0, MiB)).toBe(true);
    expect(qemuReads(top, 0, MiB, 5 * MiB)).toBe(true);
    expect(check(top)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
  });

  it('reads an image qemu-img grew to 3 TiB, and one it shrank', async () => {
    const img = p('theirs.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '1M');
    qemuIo(img, ['write -P 0x17 0 64k']);
    qemuImg('resize', img, '3T');
    qemuIo(img, ['write -P 0x18 2T 64k']);
    let d = await open(img, 'qcow2', true);
    expect(d.length).toBe(3 * TiB);
    expect(Buffer.from(await d.read(2 * TiB, 65536)).equals(Buffer.alloc(65536, 0x18))).toBe(true);
    await d.close();
    // qemu-img discards every cluster past the new end: shrink a smaller image (3 TiB takes it a minute).
    const small = p('theirs-small.qcow2');
    qemuImg('create', '-f', 'qcow2', small, '1G');
    qemuIo(small, ['write -P 0x17 0 64k', 'write -P 0x19 512M 64k']);
    qemuImg('resize', '--shrink', small, '64k');
    d = await open(small, 'qcow2', true);
    expect(d.length).toBe(65536);
    expect(Buffer.from(await d.read(0, 65536)).equals(Buffer.alloc(65536, 0x17))).toBe(true);
    await d.close();
  });

  it('refuses as QEMU does: unaligned size, v2 with snapshots, an L1 table past 32 MiB, a read-only drive', async () => {
    const img = p('refuse.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '1M');
    let d = await open(img);
    await expect(d.resize(MiB + 1)).rejects.toMatchObject({ code: 'EINVAL', message: 'The new size must be a multiple of 512' });
    await expect(d.resize(2 ** 52)).rejects.toMatchObject({ code: 'EFBIG' });
    await expect(d.resize(-1)).rejects.toMatchObject({ code: 'EINVAL', field: 'size' });
    expect(d.length).toBe(MiB);
    await d.close();
    d = await open(img, 'qcow2', true);
    await expect(d.resize(2 * MiB)).rejects.toMatchObject({ code: 'EROFS' });
    await d.close();
    const v2 = p('v2.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'compat=0.10', v2, '1M');
    qemuImg('snapshot', '-c', 's', v2);
    d = await open(v2);
    await expect(d.resize(2 * MiB)).rejects.toMatchObject({ code: 'ENOTSUP', message: "Can't resize a v2 image which has snapshots" });
    await d.close();
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
  });

  it('extended L2 (subclusters): shrink to a size inside a cluster, grow again, the same as a raw resized so', async () => {
    const img = p('ext.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=65536', img, '4M');
    qemuIo(img, ['write -P 0x21 0 4M']);
    const d = await open(img);
    await d.resize(MiB + 2048 + 512, { shrink: true });
    await d.resize(4 * MiB);
    await d.close();
    const raw = p('ext.raw');
    fs.writeFileSync(raw, Buffer.alloc(MiB + 2048 + 512, 0x21));
    fs.truncateSync(raw, 4 * MiB);
    expect(compareRaw(raw, img).code).toBe(0);
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
  });

  it('requests in flight finish before the resize (drained); the image stays consistent', async () => {
    const img = p('busy.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '4M');
    const d = await open(img);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 64; i++) writes.push(d.write(i * 65536, new Uint8Array(4096).fill(i + 1)));
    const resized = d.resize(64 * MiB);
    const results = await Promise.allSettled([...writes, resized]);
    expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
    await d.write(60 * MiB, new Uint8Array(4096).fill(0xee));
    await d.close();
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
    for (const i of [0, 31, 63]) expect(qemuReads(img, i + 1, i * 65536, 4096)).toBe(true);
    expect(qemuReads(img, 0xee, 60 * MiB, 4096)).toBe(true);
  });

  it('a hostile L2 entry past the end of the image: the shrink fails with ECORRUPT and changes nothing', async () => {
    const img = p('hostile.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '16M');
    qemuIo(img, ['write -P 0x10 7M 4096']);
    const patch = new Qcow2Patcher(img);
    // the table of 6-8 MiB: its first entry now points 1 TiB into a file of a few hundred KiB
    patch.buf.writeBigUInt64BE((1n << 63n) | (1n << 40n), patch.l2Offset(3));
    patch.save();
    const before = fs.readFileSync(img);
    const d = await open(img);
    await expect(d.resize(2 * MiB, { shrink: true })).rejects.toMatchObject({ code: 'ECORRUPT' });
    expect(d.length).toBe(16 * MiB);
    await d.close();
    expect(fs.readFileSync(img).equals(before)).toBe(true);
  });

  it('preallocation=full allocates every new cluster (qemu-img map: data, reading zeros); metadata and falloc are refused', async () => {
    const img = p('full.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '1M');
    const d = await open(img);
    await expect(d.resize(2 * MiB, { prealloc: 'metadata' })).rejects.toMatchObject({ code: 'ENOTSUP', field: 'prealloc' });
    await expect(d.resize(2 * MiB, { prealloc: 'falloc' })).rejects.toMatchObject({ code: 'ENOTSUP', field: 'prealloc' });
    await d.resize(5 * MiB, { prealloc: 'full' });
    await d.close();
    const map = JSON.parse(qemuImg('map', '--output=json', img)) as { start: number; length: number; data: boolean }[];
    const covered = map.filter((e) => e.data && e.start >= MiB).reduce((n, e) => n + e.length, 0);
    expect(covered).toBe(4 * MiB);
    expect(qemuReads(img, 0, MiB, 4 * MiB)).toBe(true);
    expect(check(img)).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
  });
});
