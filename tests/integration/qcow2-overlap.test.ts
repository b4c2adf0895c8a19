/**
 * The metadata overlap check against QEMU: on the same hostile image (a table whose refcount
 * reads 0, so the allocator hands it out) QEMU's qemu-io and our driver refuse the same write
 * naming the same metadata, both mark the image corrupt, and qemu-img sees our mark: info says
 * corrupt, qemu-io will not open it read-write, check -r all repairs it and clears the bit.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { imageSuite } from '../helpers/image-suite.js';
import { Qcow2Patcher } from '../helpers/qcow2-patch.js';
import { haveQemuTools, qemuImg } from '../helpers/qemu-images.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('qcow2 overlap tests skipped: install qemu-utils to run them');

const suite = imageSuite('blocklayer-qcow2-overlap-int-');
const { p, layer } = suite;
const CS = 65536;

const open = (image: string) => layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image } });

/** qemu-io's output (stdout and stderr together) and status. */
function qemuIo(args: string[]): { out: string; status: number | null } {
  const r = spawnSync('qemu-io', args, { encoding: 'utf8', cwd: suite.dir });
  return { out: `${r.stdout}${r.stderr}`, status: r.status };
}

const info = (image: string) => JSON.parse(qemuImg('info', '--output=json', image)) as { 'format-specific': { data: { corrupt?: boolean } } };

function check(image: string, ...extra: string[]): { corruptions: number; leaks: number } {
  const r = spawnSync('qemu-img', ['check', ...extra, '--output=json', image], { encoding: 'utf8', cwd: suite.dir });
  const j = JSON.parse(r.stdout) as Record<string, number>;
  return { corruptions: j.corruptions ?? 0, leaks: j.leaks ?? 0 };
}

/** A qemu-img image with one data cluster, the refcount of its `which` cluster set to 0. */
function hostile(name: string, which: 'l1' | 'l2'): { image: string; at: number } {
  const image = p(name);
  qemuImg('create', '-q', '-f', 'qcow2', image, '16M');
  spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', image], { cwd: suite.dir });
  const x = new Qcow2Patcher(image);
  const at = which === 'l1' ? Number(x.buf.readBigUInt64BE(40)) : x.l2Offset();
  x.setRefcount(at / CS, 0);
  x.save();
  return { image, at };
}

describe.skipIf(!available)('qcow2 metadata overlap check, as QEMU sees it', () => {
  it.each([
    ['l1', 'active L1 table'],
    ['l2', 'active L2 table'],
  ] as const)('a freed %s table: QEMU and we refuse the same write, naming it the same', async (which, name) => {
    const theirs = hostile(`theirs-${which}.qcow2`, which);
    const q = qemuIo(['-f', 'qcow2', '-c', 'write -P 0x22 1M 64k', theirs.image]);
    expect(q.out).toContain(`Preventing invalid write on metadata (overlaps with ${name})`);
    expect(info(theirs.image)['format-specific'].data.corrupt).toBe(true);

    const ours = hostile(`ours-${which}.qcow2`, which);
    const before = fs.readFileSync(ours.image).subarray(ours.at, ours.at + CS);
    const d = await open(ours.image);
    await expect(d.write(1 << 20, Buffer.alloc(CS, 0x22))).rejects.toMatchObject({
      code: 'ECORRUPT',
      message: `qcow2: Preventing invalid write on metadata (overlaps with ${name}); image marked as corrupt`,
    });
    await d.close();
    expect(fs.readFileSync(ours.image).subarray(ours.at, ours.at + CS)).toEqual(before);
    expect(info(ours.image)['format-specific'].data.corrupt).toBe(true);
    const rw = qemuIo(['-f', 'qcow2', '-c', 'read 0 512', ours.image]);
    expect(rw.out).toContain('Image is corrupt; cannot be opened read/write');
    // The refcount we zeroed is what qemu-img check finds; the repair fixes it and clears the corrupt bit.
    expect(check(ours.image).corruptions).toBeGreaterThan(0);
    check(ours.image, '-r', 'all');
    expect(info(ours.image)['format-specific'].data.corrupt).toBe(false);
    expect(check(ours.image)).toEqual({ corruptions: 0, leaks: 0 });
    // Repaired, the image takes the write again, and QEMU reads it back.
    const again = await open(ours.image);
    await again.write(1 << 20, Buffer.alloc(CS, 0x22));
    await again.close();
    expect(check(ours.image)).toEqual({ corruptions: 0, leaks: 0 });
    expect(qemuIo(['-r', '-f', 'qcow2', '-c', 'read -P 0x22 1M 64k', '-c', 'read -P 0x11 0 64k', ours.image]).out).not.toMatch(/fail|mismatch/i);
  });
});
