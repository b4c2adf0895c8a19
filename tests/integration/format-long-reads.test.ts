import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { convertImage } from '../../src/index.js';
import { imageSuite } from '../helpers/image-suite.js';
import { haveQemuTools, qemuImg, qemuIo } from '../helpers/qemu-images.js';

// Reads of several MiB (a convert's pieces and longer) that cross block boundaries, over blocks
// with data, without, and with data whose blocks lie out of guest order in the file; each is
// compared with the bytes qemu-img convert -O raw makes, and block status with those bytes.

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');

const MiB = 1 << 20;
const suite = imageSuite('blocklayer-long-reads-');
const { p, layer } = suite;

/**
 * Blocks with data and without; runs written in one request (blocks one after another in the
 * file) and blocks written in reverse guest order (12 before 11, then 13: apart in the file).
 */
const WRITES = [
  'write -P 0xab 0 64k',
  'write -P 0x11 1020k 8k',
  'write -P 0x22 3M 2560k',
  'write -P 0x66 12M 1M',
  'write -P 0x77 11M 1M',
  'write -P 0x88 13M 1M',
  'write -P 0x44 17M 6M',
  'write -P 0x55 30M 1M',
];

const cases: [string, string, string[]][] = [
  ['vhdx, 1 MiB blocks', 'vhdx', ['-o', 'block_size=1M']],
  ['vhdx, automatic 8 MiB blocks', 'vhdx', []],
  ['vdi dynamic', 'vdi', []],
  ['vdi static', 'vdi', ['-o', 'static=on']],
  ['vpc dynamic', 'vpc', ['-o', 'subformat=dynamic']],
];

describe.skipIf(!available)('reads across blocks of mixed kinds equal the bytes qemu-img converts to raw', () => {
  for (const [name, format, options] of cases) {
    it(name, async () => {
      const img = p(`${name.replace(/[^a-z0-9]+/gi, '-')}.${format}`);
      qemuImg('create', '-q', '-f', format, ...options, img, String(32 * MiB));
      const size = JSON.parse(qemuImg('info', '--output=json', img))['virtual-size'] as number;
      qemuIo(img, WRITES, format);
      const ref = p('ref.raw');
      qemuImg('convert', '-f', format, '-O', 'raw', img, ref);
      const want = fs.readFileSync(ref);
      const d = await layer.openDrive({ driver: format, readOnly: true, file: { driver: 'file', filename: img } } as never);
      try {
        // Pieces of several lengths from several starts (sector-aligned, off block boundaries), 8 at a time.
        for (const [start, len] of [
          [0, 4 * MiB],
          [512, 3 * MiB + 4608],
          [MiB - 4096, 2 * MiB + 8192],
          [10 * MiB + 512, 5 * MiB],
          [0, size],
        ]) {
          const reqs: [number, number][] = [];
          for (let o = start; o < size; o += len) reqs.push([o, Math.min(len, size - o)]);
          for (let i = 0; i < reqs.length; i += 8) {
            const batch = reqs.slice(i, i + 8);
            const got = await Promise.all(batch.map(([o, n]) => d.read(o, new Uint8Array(n))));
            for (let k = 0; k < batch.length; k++) {
              const [o, n] = batch[k];
              if (!Buffer.from(got[k]).equals(want.subarray(o, o + n))) expect.fail(`${name}: ${n} bytes at ${o} differ from qemu-img's`);
            }
          }
        }
        // Block status tiles the disk and says zero only where the bytes are zero.
        let at = 0;
        while (at < size) {
          const s = await d.blockStatus(at, size - at);
          expect(s.offset).toBe(at);
          expect(s.length).toBeGreaterThan(0);
          if (s.zero && !want.subarray(at, at + s.length).every((x) => x === 0)) expect.fail(`${name}: block status says zeros over data at ${at} (+${s.length})`);
          if (!s.data && !s.zero) expect.fail(`${name}: an extent at ${at} neither data nor zeros`);
          at += s.length;
        }
        expect(at).toBe(size);
      } finally {
        await d.close();
      }
      const out = p('ours.raw');
      await convertImage(img, out, { outputFormat: 'raw' });
      expect(fs.readFileSync(out).equals(want)).toBe(true);
    });
  }
});
