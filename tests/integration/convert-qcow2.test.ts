import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveQemuTools, qemuImg, qemuIo, setQemuCwd } from '../helpers/qemu-images.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('convert -O qcow2 tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const cli = (...args: string[]) => spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
let dir: string;
const p = (name: string) => path.join(dir, name);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-convert-qcow2-'));
  setQemuCwd(dir);
  // 9 MiB + 1 sector: text-like data, a hole, a run of written zeros, an incompressible piece, an odd tail.
  const size = 9 * 1024 * 1024 + 512;
  const b = Buffer.alloc(size);
  for (let i = 0; i < 3 << 20; i++) b[i] = 97 + ((i * 7 + (i >> 9)) % 23);
  let x = 12345;
  for (let i = 5 << 20; i < 6 << 20; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  b.fill(0x42, size - 700, size);
  fs.writeFileSync(p('src.raw'), b);
  // a real hole in the middle
  const fd = fs.openSync(p('src.raw'), 'r+');
  fs.writeSync(fd, Buffer.alloc(1 << 20), 0, 1 << 20, 7 << 20);
  fs.closeSync(fd);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!available)('blocklayer convert -O qcow2: images qemu-img accepts', () => {
  for (const [label, args] of [
    ['plain', []],
    ['compressed (zlib)', ['-c']],
    ['compressed (zstd)', ['-c', '-o', 'compression_type=zstd']],
    ['v2, 4 KiB clusters', ['-o', 'compat=0.10,cluster_size=4k']],
    ['extended L2, 128 KiB clusters, compressed', ['-c', '-o', 'extended_l2=on,cluster_size=128k']],
  ] as [string, string[]][]) {
    it(`${label}: qemu-img check is clean and qemu-img compare finds the same guest data`, () => {
      const out = p(`out-${label.replace(/\W+/g, '-')}.qcow2`);
      const r = cli('convert', '-q', '-f', 'raw', '-O', 'qcow2', ...args, p('src.raw'), out);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const check = JSON.parse(qemuImg('check', '--output=json', out)) as Record<string, number>;
      expect(check.corruptions ?? 0).toBe(0);
      expect(check.leaks ?? 0).toBe(0);
      if (args.includes('-c')) expect(check['compressed-clusters']).toBeGreaterThan(0);
      qemuImg('compare', '-q', '-f', 'raw', '-F', 'qcow2', p('src.raw'), out);
      const info = JSON.parse(qemuImg('info', '--output=json', out)) as { 'virtual-size': number; 'format-specific': { data: Record<string, unknown> } };
      expect(info['virtual-size']).toBe(fs.statSync(p('src.raw')).size);
      if (args.join(' ').includes('zstd')) expect(info['format-specific'].data['compression-type']).toBe('zstd');
      // zero clusters and the hole stay unallocated: the image is smaller than the data it holds
      if (args.includes('-c')) expect(fs.statSync(out).size).toBeLessThan(fs.statSync(p('src.raw')).size / 2);
    });
  }

  it('-O raw across many 4 MiB windows converted at once: the bytes qemu-img convert writes, holes left as holes', () => {
    // 41 MiB + 1 sector of qcow2: data in some windows (whole, partial, straddling a window
    // edge, the odd tail), explicit zero clusters, and windows that are all hole.
    const img = p('windows.qcow2');
    qemuImg('create', '-f', 'qcow2', img, String(41 * 1024 * 1024 + 512));
    qemuIo(img, [
      'write -P 0x11 0 3M',
      'write -P 0x22 7M 2M',
      'write -z 9M 1M',
      'write -P 0x33 15M 5M',
      'write -P 0x44 28M 64k',
      'write -P 0x55 36M 4M',
      'write -P 0x66 41M 512',
    ]);
    const ours = p('windows-ours.raw');
    const theirs = p('windows-qemu.raw');
    const r = cli('convert', '-q', img, ours);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    qemuImg('convert', '-O', 'raw', img, theirs);
    expect(fs.statSync(ours).size).toBe(fs.statSync(theirs).size);
    expect(fs.readFileSync(ours).equals(fs.readFileSync(theirs))).toBe(true);
    // About 14 MiB of data in 41 MiB: holes and zero clusters were skipped, not written.
    expect(fs.statSync(ours).blocks * 512).toBeLessThan(20 * 1024 * 1024);
  });

  it('refuses -c with raw output, and backing/data-file options, with one line and no output file', () => {
    const r = cli('convert', '-c', p('src.raw'), p('x.raw'));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/EINVAL: -c and -o need -O qcow2/);
    const r2 = cli('convert', '-O', 'qcow2', '-o', 'data_file=d.raw', p('src.raw'), p('x.qcow2'));
    expect(r2.status).toBe(1);
    expect(r2.stderr).toMatch(/ENOTSUP: -o: dataFile/);
    expect(fs.existsSync(p('x.raw')) || fs.existsSync(p('x.qcow2'))).toBe(false);
  });
});
