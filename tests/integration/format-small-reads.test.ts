import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { imageSuite } from '../helpers/image-suite.js';
import { haveQemuTools, qemuImg, qemuIo } from '../helpers/qemu-images.js';

// Small reads (the 4 KiB random reads of a guest, and odd ones) take the drivers' one-block
// shortcut when they can; these compare each with the bytes qemu-img convert -O raw makes.

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');

const MiB = 1 << 20;
const suite = imageSuite('blocklayer-small-reads-');
const { p, layer } = suite;

/** Data in some blocks and not others, and pieces across block boundaries (all below 31 MiB, the smallest size below). */
const WRITES = ['write -P 0xab 0 64k', 'write -P 0x11 1020k 8k', 'write -P 0x22 3M 2560k', 'write -P 0x33 9M 512', 'write -P 0x44 17M 3M', 'write -P 0x55 30M 1M'];

/** Reads of 512 B to 64 KiB: 4 KiB aligned ones everywhere, and unaligned ones and ones that end just past a MiB boundary. */
function requests(size: number): [number, number][] {
  const out: [number, number][] = [];
  let x = 12345;
  const rand = (n: number) => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x % n;
  };
  for (let i = 0; i < 400; i++) out.push([rand(size / 4096) * 4096, 4096]);
  for (let m = 1; m * MiB < size; m++) {
    out.push([m * MiB - 4096, 4096], [m * MiB - 2048, 4096], [m * MiB - 512, 512], [m * MiB - 100, 70000]);
  }
  for (let i = 0; i < 100; i++) {
    const len = [512, 4096, 4608, 65536][rand(4)];
    out.push([rand(size - len), len]);
  }
  out.push([size - 4096, 4096], [size - 512, 512]);
  return out;
}

const cases: [string, string, string[], number][] = [
  ['vhdx, 1 MiB blocks', 'vhdx', ['-o', 'block_size=1M'], 32 * MiB],
  ['vhdx, automatic 8 MiB blocks', 'vhdx', [], 32 * MiB],
  ['vhdx, 32 MiB blocks, an odd size', 'vhdx', ['-o', 'block_size=32M'], 31 * MiB + 7 * 512],
  ['vhdx fixed', 'vhdx', ['-o', 'subformat=fixed'], 32 * MiB],
  ['vdi dynamic', 'vdi', [], 32 * MiB],
  ['vdi static', 'vdi', ['-o', 'static=on'], 32 * MiB],
  ['vpc dynamic', 'vpc', ['-o', 'subformat=dynamic'], 32 * MiB],
];

describe.skipIf(!available)('small reads at scattered offsets equal the bytes qemu-img converts to raw', () => {
  for (const [name, format, options, size] of cases) {
    it(name, async () => {
      const img = p(`${name.replace(/[^a-z0-9]+/gi, '-')}.${format}`);
      qemuImg('create', '-q', '-f', format, ...options, img, String(size));
      // vpc rounds the size to its geometry: read what the image has.
      const actual = JSON.parse(qemuImg('info', '--output=json', img))['virtual-size'] as number;
      qemuIo(img, WRITES, format);
      qemuImg('convert', '-f', format, '-O', 'raw', img, p('ref.raw'));
      const ref = fs.readFileSync(p('ref.raw'));
      const d = await layer.openDrive({ driver: format, readOnly: true, file: { driver: 'file', filename: img } } as never);
      try {
        expect(d.length).toBe(actual);
        const reqs = requests(actual - (actual % 512));
        // 16 at a time, as a guest's queue would issue them
        for (let i = 0; i < reqs.length; i += 16) {
          const batch = reqs.slice(i, i + 16).filter(([o, n]) => o + n <= actual);
          const got = await Promise.all(batch.map(([o, n]) => d.read(o, new Uint8Array(n))));
          for (let k = 0; k < batch.length; k++) {
            const [o, n] = batch[k];
            if (!Buffer.from(got[k]).equals(ref.subarray(o, o + n))) expect.fail(`${name}: ${n} bytes at ${o} differ from qemu-img's`);
          }
        }
      } finally {
        await d.close();
      }
    });
  }
});
