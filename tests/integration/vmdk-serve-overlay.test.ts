import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { imageSuite } from '../helpers/image-suite.js';
import { driveHash, haveQemuTools, qemuImg, qemuIo } from '../helpers/qemu-images.js';
import { serve } from '../helpers/serve-process.js';
import { haveProgram, ok } from '../helpers/tools.js';

const available = haveQemuTools();
const haveLibnbd = haveProgram('nbdinfo') && haveProgram('nbdcopy');
if (process.env.CI === 'true' && !(available && haveLibnbd)) throw new Error('qemu-utils and libnbd-bin must be installed in CI');

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const suite = imageSuite('blocklayer-vmdk-serve-');
const { p, layer } = suite;

/** The virtual size of the bases: past 2 GiB for the split vmdk (its extent boundary), small for the rest. */
const sizeOf = (name: string) => (name.includes('split') ? 2 * GiB + MiB : 64 * MiB);

/** A base image of `format` made by qemu-img, data near its start, its end and (split) on both sides of 2 GiB. */
function base(name: string, format: string, options: string[]): string {
  const size = sizeOf(name);
  qemuImg('create', '-q', '-f', format, ...options, name, String(size));
  const boundary = size > 2 * GiB ? [`write -P 0x22 ${2 * GiB - 64 * 1024} 192k`] : [];
  qemuIo(p(name), ['write -P 0x11 0 1M', ...boundary, `write -P 0x33 ${size - 4096} 4k`], format);
  return name;
}

/** sha256 of what `qemu-img convert -O raw` makes of an image (streamed: the copy may pass 2 GiB). */
function convertedHash(image: string): string {
  const out = `${image}.raw`;
  execFileSync('qemu-img', ['convert', '-O', 'raw', p(image), p(out)]);
  const hash = execFileSync('sha256sum', [p(out)], { encoding: 'utf8' }).split(' ')[0];
  fs.rmSync(p(out));
  return hash;
}

const BASES: [string, string, string[]][] = [
  ['vmdk', 'split.vmdk', ['-o', 'subformat=twoGbMaxExtentSparse']],
  ['vmdk', 'mono.vmdk', []],
  ['vmdk', 'flat.vmdk', ['-o', 'subformat=monolithicFlat']],
  ['vhdx', 'base.vhdx', []],
];

describe.skipIf(!available)('a qcow2 overlay (qemu-img create -b BASE -F FMT) over the new formats', { timeout: 120_000 }, () => {
  for (const [format, name, options] of BASES) {
    it(`over ${name}: read byte-identical to qemu-img convert's output; our writes land in the overlay, qemu-img check clean`, async () => {
      base(name, format, options);
      const top = `top-${name}.qcow2`;
      qemuImg('create', '-q', '-f', 'qcow2', '-b', name, '-F', format, top);
      const size = sizeOf(name);
      const mid = Math.floor(size / 2 / MiB) * MiB;
      qemuIo(p(top), [`write -P 0x44 ${mid - 4096} 8k`], 'qcow2');
      const d = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: p(top) } });
      try {
        expect(d.length).toBe(size);
        expect(await driveHash(d)).toBe(convertedHash(top));
      } finally {
        await d.close();
      }
      const w = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: p(top) } });
      try {
        await w.write(mid + MiB, Buffer.alloc(64 * 1024, 0x55));
      } finally {
        await w.close();
      }
      expect(qemuImg('check', top)).toContain('No errors');
      const read = execFileSync('qemu-io', ['-f', 'qcow2', '-c', `read -P 0x55 ${mid + MiB} 64k`, '-c', 'read -P 0x11 0 512k', '-c', `read -P 0x44 ${mid - 4096} 8k`, p(top)], { cwd: suite.dir, encoding: 'utf8' });
      expect(read).not.toMatch(/Pattern verification failed/);
      // The base is untouched: qemu-img check of it is clean.
      if (format === 'vmdk') expect(qemuImg('check', name)).toContain('No errors');
    });
  }
});

describe.skipIf(!available || !haveLibnbd)('serve: an NBD export of the new formats, read by nbdinfo and nbdcopy', { timeout: 180_000 }, () => {
  for (const [format, name, options] of [BASES[0], BASES[3]]) {
    it(`${name}: nbdinfo's size, and nbdcopy's copy equal to qemu-img convert -O raw`, async () => {
      const img = base(`served-${name}`, format, options);
      const sock = p(`${name}.sock`);
      const s = await serve(p(img), '-x', 'd', '-k', sock, '--read-only');
      try {
        const uri = `nbd+unix:///d?socket=${sock}`;
        const info = JSON.parse(await ok('nbdinfo', ['--json', uri])) as { exports: { 'export-size': number }[] };
        expect(info.exports[0]['export-size']).toBe(sizeOf(name));
        await ok('nbdcopy', [uri, p(`${name}.copy`)], 120_000);
      } finally {
        s.child.kill('SIGTERM');
        await s.exited;
      }
      execFileSync('qemu-img', ['convert', '-O', 'raw', p(img), p(`${name}.ref`)]);
      execFileSync('cmp', [p(`${name}.copy`), p(`${name}.ref`)]);
    });
  }
});
