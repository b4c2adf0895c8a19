import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertImage } from '../../src/index.js';
import { haveQemuTools, qemuImg, setQemuCwd } from '../helpers/qemu-images.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('convert pipeline tests skipped: install qemu-utils to run them');

const MiB = 1024 * 1024;
let dir: string;
const p = (name: string) => path.join(dir, name);

/** 21 MiB + 1 KiB: random data, a hole, written zeros with a lone byte in them, data across block boundaries, an odd tail. */
const SIZE = 21 * MiB + 1024;

beforeAll(() => {
  if (!available) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-convert-pipeline-'));
  setQemuCwd(dir);
  const b = Buffer.alloc(SIZE);
  let x = 987654321;
  const fill = (from: number, to: number) => {
    for (let i = from; i < to; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      b[i] = (x >>> 24) | 1;
    }
  };
  fill(0, 3 * MiB + 5000);
  // 3 MiB + 5000 … 8 MiB: a hole; 8 … 12 MiB: zeros written (allocated in each format), one byte set in them
  b[10 * MiB + 4097] = 0x77;
  fill(12 * MiB - 700, 17 * MiB + 300);
  fill(SIZE - 1500, SIZE);
  fs.writeFileSync(p('src.raw'), b);
  // the zeros are written explicitly: the formats allocate them, so the pipeline's zero detection meets them
  const fd = fs.openSync(p('src.raw'), 'r+');
  fs.writeSync(fd, Buffer.alloc(4 * MiB), 0, 4 * MiB, 8 * MiB);
  fs.writeSync(fd, Buffer.from([0x77]), 0, 1, 10 * MiB + 4097);
  fs.closeSync(fd);
  for (const fmt of ['qcow2', 'vpc', 'vhdx', 'vdi', 'vmdk']) qemuImg('convert', '-f', 'raw', '-O', fmt, '-S', '0', 'src.raw', `src.${fmt}`);
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!available)('convert pipeline vs qemu-img convert', () => {
  for (const fmt of ['qcow2', 'vpc', 'vhdx', 'vdi', 'vmdk']) {
    it(`${fmt} → raw: the bytes of qemu-img convert -O raw, as sparse as qemu-img's (zero grains left as holes)`, async () => {
      qemuImg('convert', '-f', fmt, '-O', 'raw', `src.${fmt}`, `q-${fmt}.raw`);
      await convertImage(p(`src.${fmt}`), p(`o-${fmt}.raw`));
      expect(fs.readFileSync(p(`o-${fmt}.raw`)).equals(fs.readFileSync(p(`q-${fmt}.raw`)))).toBe(true);
      // The 4 MiB of written zeros (but the 4 KiB grain with a byte) and the hole are holes in our output.
      const allocated = fs.statSync(p(`o-${fmt}.raw`)).blocks * 512;
      expect(allocated).toBeLessThanOrEqual(SIZE - 8 * MiB);
    });
  }

  for (const out of ['qcow2', 'vdi', 'vpc', 'vhdx', 'vmdk']) {
    it(`vpc → ${out} through the same pipeline: qemu-img compare equal${out === 'qcow2' || out === 'vdi' || out === 'vhdx' ? ', check clean' : ''}`, async () => {
      await convertImage(p('src.vpc'), p(`o.${out}`), { outputFormat: out });
      qemuImg('compare', '-q', '-f', 'raw', '-F', out, 'src.raw', `o.${out}`);
      if (out === 'qcow2' || out === 'vdi' || out === 'vhdx') qemuImg('check', '-q', '-f', out, `o.${out}`);
    });
  }
});
