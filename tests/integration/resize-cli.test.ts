import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, resizeImage } from '../../src/index.js';
import { haveQemuTools, qemuImg, setQemuCwd } from '../helpers/qemu-images.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools();
// The command runs in the test's directory (as qemu-img does, for relative names): tsx by its path, not found from there by name.
const MiB = 2 ** 20;
let dir: string;
const p = (name: string) => path.join(dir, name);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-resize-cli-'));
  setQemuCwd(dir);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function ours(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, 'resize', ...args], { encoding: 'utf8', cwd: dir });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
function theirs(...args: string[]) {
  const r = spawnSync('qemu-img', ['resize', ...args], { encoding: 'utf8', cwd: dir });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const virtualSize = (image: string) => (JSON.parse(qemuImg('info', '--output=json', image)) as { 'virtual-size': number })['virtual-size'];

describe.skipIf(!available)('blocklayer resize against qemu-img resize', () => {
  it('grows and shrinks like qemu-img: "Image resized.", the same sizes, qemu-img check clean', () => {
    for (const [who, run] of [['ours', ours], ['theirs', theirs]] as const) {
      const img = p(`${who}.qcow2`);
      qemuImg('create', '-f', 'qcow2', img, '1M');
      expect(run(img, '+1M')).toMatchObject({ code: 0, stdout: 'Image resized.\n' });
      expect(virtualSize(img)).toBe(2 * MiB);
      expect(run('--shrink', img, '-512K')).toMatchObject({ code: 0, stdout: 'Image resized.\n' });
      expect(virtualSize(img)).toBe(1.5 * MiB);
      expect(run('-q', img, '10G')).toMatchObject({ code: 0, stdout: '' });
      expect(virtualSize(img)).toBe(10 * 2 ** 30);
      expect(spawnSync('qemu-img', ['check', img]).status).toBe(0);
    }
  }, 240_000);

  it('refuses bad input as qemu-img does: exit 1 and its message', () => {
    const img = p('bad.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '1M');
    qemuImg('create', '-f', 'vpc', p('bad.vpc'), '1M');
    const cases: string[][] = [
      [img, '-512K'],
      [img, 'abc'],
      [img, '--', '-100M'],
      [img],
      [img, '+1M', 'extra'],
      ['--preallocation=foo', img, '+1M'],
      [img, '+1'],
      ['--shrink', '--preallocation=full', img, '512K'],
      [p('bad.vpc'), '2M'],
    ];
    for (const args of cases) {
      const q = theirs(...args);
      const b = ours(...args);
      expect(q.code, args.join(' ')).toBe(1);
      expect(b.code, args.join(' ')).toBe(1);
      const first = q.stderr.split('\n')[0]!.replace(/^qemu-img: /, '');
      expect(b.stderr, args.join(' ')).toContain(first);
    }
    expect(virtualSize(img)).toBe(MiB);
  }, 240_000);

  it('resizes raw files: grows with zeros, shrinks with --shrink, preallocates with falloc and full', async () => {
    const raw = p('a.raw');
    fs.writeFileSync(raw, Buffer.alloc(MiB, 0xab));
    expect(await resizeImage(raw, '+3M', { format: 'raw' })).toEqual({ oldSize: MiB, newSize: 4 * MiB });
    expect(fs.statSync(raw).size).toBe(4 * MiB);
    expect(spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw, raw]).status).toBe(0);
    const b = fs.readFileSync(raw);
    expect(b.subarray(0, MiB).every((x) => x === 0xab) && b.subarray(MiB).every((x) => x === 0)).toBe(true);
    await expect(resizeImage(raw, '1000001', { format: 'raw' })).rejects.toMatchObject({ code: 'EINVAL', field: 'size' });
    expect(await resizeImage(raw, '1000001', { format: 'raw', shrink: true })).toEqual({ oldSize: 4 * MiB, newSize: 1000001 });
    expect(fs.statSync(raw).size).toBe(1000001);
    // falloc reserves blocks for the new part, full writes it: the file's blocks cover it either way.
    for (const mode of ['falloc', 'full'] as const) {
      const f = p(`${mode}.raw`);
      fs.writeFileSync(f, '');
      await resizeImage(f, '8M', { format: 'raw', preallocation: mode });
      expect(fs.statSync(f).size).toBe(8 * MiB);
      expect(fs.statSync(f).blocks * 512).toBeGreaterThanOrEqual(8 * MiB);
    }
    const sparse = p('sparse.raw');
    fs.writeFileSync(sparse, '');
    await resizeImage(sparse, '8M', { format: 'raw' });
    expect(fs.statSync(sparse).blocks * 512).toBeLessThan(MiB);
    await expect(resizeImage(raw, '16M', { format: 'raw', preallocation: 'metadata' })).rejects.toMatchObject({ code: 'ENOTSUP', message: 'Unsupported preallocation mode: metadata' });
  });

  it('raw with an offset grows its file by as much; a raw window of fixed size refuses (QEMU)', async () => {
    const raw = p('window.raw');
    fs.writeFileSync(raw, Buffer.alloc(MiB, 1));
    const layer = new BlockLayer();
    try {
      const d = await layer.openDrive({ driver: 'raw', offset: 4096, file: { driver: 'file', filename: raw } });
      expect(d.length).toBe(MiB - 4096);
      await d.resize(2 * MiB);
      expect(d.length).toBe(2 * MiB);
      expect(fs.statSync(raw).size).toBe(2 * MiB + 4096);
      await d.close();
      const fixed = await layer.openDrive({ driver: 'raw', offset: 0, size: 65536, file: { driver: 'file', filename: raw } });
      await expect(fixed.resize(2 * 65536)).rejects.toMatchObject({ code: 'ENOTSUP', message: 'Cannot resize fixed-size raw disks' });
      await fixed.close();
    } finally {
      await layer.close();
    }
  });
});

describe('resize of memory and null nodes', () => {
  it('memory: a shrink drops the bytes past the end, growing again reads zeros; null just changes size', async () => {
    const layer = new BlockLayer();
    try {
      const m = await layer.openDrive({ driver: 'memory', size: 256 * 1024 });
      await m.write(0, new Uint8Array(256 * 1024).fill(7));
      await m.resize(100_000, { shrink: true });
      expect(m.length).toBe(100_000);
      await m.resize(256 * 1024);
      const b = await m.read(0, 256 * 1024);
      expect(b.subarray(0, 100_000).every((x) => x === 7)).toBe(true);
      expect(b.subarray(100_000).every((x) => x === 0)).toBe(true);
      const n = await layer.openDrive({ driver: 'null', size: 4096 });
      await n.resize(2 ** 40);
      expect(n.length).toBe(2 ** 40);
      await expect(n.resize(4096)).rejects.toMatchObject({ code: 'EINVAL', field: 'size' });
      await n.resize(4096, { shrink: true });
      expect(n.length).toBe(4096);
      const ro = await layer.openDrive({ driver: 'null', size: 4096, readOnly: true });
      await expect(ro.resize(8192)).rejects.toMatchObject({ code: 'EROFS' });
    } finally {
      await layer.close();
    }
  });
});
