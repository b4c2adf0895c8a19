import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type CreateOptionsInput, createImage } from '../../src/index.js';
import { haveQemuTools } from '../helpers/qemu-images.js';
import { rejection } from '../helpers/rejection.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('create: qemu-img comparisons skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const MiB = 2 ** 20;

let dir: string;
/** qemu-img's images go to dir/theirs, ours to dir/ours, under the same names (headers name files relatively). */
const theirs = (n: string) => path.join(dir, 'theirs', n);
const ours = (n: string) => path.join(dir, 'ours', n);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-create-'));
  fs.mkdirSync(path.join(dir, 'theirs'));
  fs.mkdirSync(path.join(dir, 'ours'));
  if (!available) return;
  // A backing file with data in both trees: 0x5a in the first MiB.
  for (const where of [theirs, ours]) {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', where('base.qcow2'), '32M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', where('base.qcow2')], { stdio: 'ignore' });
  }
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const img = (file: string, ...args: string[]) => execFileSync('qemu-img', args.concat(file), { encoding: 'utf8', cwd: path.dirname(file) });
const infoJson = (file: string) => JSON.parse(img(file, 'info', '--output=json')) as Record<string, unknown>;
const mapJson = (file: string) => JSON.parse(img(file, 'map', '--output=json')) as Record<string, unknown>[];

/** qemu-img check --output=json, which exits non-zero on problems: the parsed report either way. */
function check(file: string): Record<string, unknown> {
  const r = spawnSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8', cwd: path.dirname(file) });
  return JSON.parse(r.stdout || '{}');
}
function expectClean(file: string) {
  const c = check(file);
  expect(c).toMatchObject({ 'check-errors': 0 });
  expect(c.corruptions ?? 0).toBe(0);
  expect(c.leaks ?? 0).toBe(0);
}

interface Case {
  name: string;
  /** qemu-img create -o list (data file names get the case name). */
  o: string;
  opts: Partial<CreateOptionsInput>;
  size?: number;
  backing?: boolean;
  /** Our file is byte-identical to qemu-img's. */
  identical: boolean;
}

const CASES: Case[] = [
  { name: 'plain', o: '', opts: {}, size: 1024 * MiB, identical: true },
  { name: 'v2', o: 'compat=0.10', opts: { compat: '0.10' }, identical: true },
  { name: 'refcount1', o: 'refcount_bits=1', opts: { refcountBits: 1 }, identical: true },
  { name: 'refcount64', o: 'refcount_bits=64', opts: { refcountBits: 64 }, identical: true },
  { name: 'extl2', o: 'extended_l2=on', opts: { extendedL2: true }, identical: true },
  { name: 'lazy', o: 'lazy_refcounts=on', opts: { lazyRefcounts: true }, identical: true },
  { name: 'zstd', o: 'compression_type=zstd', opts: { compressionType: 'zstd' }, identical: true },
  { name: 'c512', o: 'cluster_size=512', opts: { clusterSize: 512 }, identical: true },
  { name: 'c2M', o: 'cluster_size=2M', opts: { clusterSize: '2M' }, identical: true },
  // a 4 MiB L1 table: the refcount table has to grow while it is allocated
  { name: 'c512-rb64-16G', o: 'cluster_size=512,refcount_bits=64', opts: { clusterSize: 512, refcountBits: 64 }, size: 16 * 1024 * MiB, identical: true },
  { name: 'odd-size', o: '', opts: {}, size: 1000, identical: true },
  { name: 'empty', o: '', opts: {}, size: 0, identical: true },
  { name: 'meta', o: 'preallocation=metadata', opts: { preallocation: 'metadata' }, identical: true },
  { name: 'meta-extl2', o: 'extended_l2=on,preallocation=metadata', opts: { extendedL2: true, preallocation: 'metadata' }, identical: true },
  { name: 'meta-c4k', o: 'cluster_size=4k,preallocation=metadata', opts: { clusterSize: 4096, preallocation: 'metadata' }, size: 1024 * MiB, identical: true },
  { name: 'meta-c512-rb64', o: 'cluster_size=512,refcount_bits=64,preallocation=metadata', opts: { clusterSize: 512, refcountBits: 64, preallocation: 'metadata' }, size: 4 * MiB, identical: true },
  { name: 'meta-odd', o: 'preallocation=metadata', opts: { preallocation: 'metadata' }, size: MiB + 512, identical: true },
  { name: 'meta-extl2-odd', o: 'extended_l2=on,preallocation=metadata', opts: { extendedL2: true, preallocation: 'metadata' }, size: MiB + 512, identical: true },
  { name: 'data-meta-odd', o: 'data_file=data-meta-odd-d.raw,preallocation=metadata', opts: { dataFile: 'data-meta-odd-d.raw', preallocation: 'metadata' }, size: MiB + 512, identical: true },
  { name: 'falloc', o: 'preallocation=falloc', opts: { preallocation: 'falloc' }, identical: true },
  { name: 'falloc-c4k', o: 'cluster_size=4k,preallocation=falloc', opts: { clusterSize: 4096, preallocation: 'falloc' }, identical: true },
  { name: 'full', o: 'preallocation=full', opts: { preallocation: 'full' }, size: 16 * MiB, identical: true },
  { name: 'data', o: 'data_file=data-d.raw', opts: { dataFile: 'data-d.raw' }, identical: true },
  { name: 'data-raw', o: 'data_file=data-raw-d.raw,data_file_raw=on', opts: { dataFile: 'data-raw-d.raw', dataFileRaw: true }, identical: true },
  { name: 'backing', o: '', opts: { backing: 'base.qcow2', backingFormat: 'qcow2' }, backing: true, identical: true },
  { name: 'backing-v2', o: 'compat=0.10', opts: { backing: 'base.qcow2', backingFormat: 'qcow2', compat: '0.10' }, backing: true, identical: true },
  { name: 'backing-bigger', o: '', opts: { backing: 'base.qcow2', backingFormat: 'qcow2' }, size: 64 * MiB, backing: true, identical: true },
  { name: 'backing-extl2-meta', o: 'extended_l2=on,preallocation=metadata', opts: { backing: 'base.qcow2', backingFormat: 'qcow2', extendedL2: true, preallocation: 'metadata' }, backing: true, identical: true },
];

/** Whether two files hold the same bytes (read in 4 MiB pieces: some images are 1 GiB). */
function sameBytes(a: string, b: string): boolean {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  try {
    const ba = Buffer.alloc(4 * MiB);
    const bb = Buffer.alloc(4 * MiB);
    for (let pos = 0; ; pos += ba.length) {
      const na = fs.readSync(fa, ba, 0, ba.length, pos);
      const nb = fs.readSync(fb, bb, 0, bb.length, pos);
      if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
      if (na === 0) return true;
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

const INFO_KEYS = ['virtual-size', 'cluster-size', 'format', 'format-specific', 'backing-filename', 'backing-filename-format', 'dirty-flag'];

describe.skipIf(!available)('createImage against qemu-img create', () => {
  for (const c of CASES) {
    describe(c.name, () => {
      const file = `${c.name}.qcow2`;
      beforeAll(async () => {
        const args = ['create', '-q', '-f', 'qcow2'];
        if (c.o) args.push('-o', c.o);
        if (c.backing) args.push('-b', 'base.qcow2', '-F', 'qcow2');
        args.push(theirs(file));
        const size = c.size ?? (c.backing ? undefined : 64 * MiB);
        if (size !== undefined) args.push(String(size));
        execFileSync('qemu-img', args, { cwd: path.join(dir, 'theirs') });
        await createImage(ours(file), { format: 'qcow2', ...c.opts, ...(size === undefined ? {} : { size }) } as CreateOptionsInput);
      });

      it('qemu-img check finds no errors, leaks or corruptions', () => expectClean(ours(file)));

      it('qemu-img info agrees with the image qemu-img made', () => {
        const a = infoJson(theirs(file));
        const b = infoJson(ours(file));
        for (const k of INFO_KEYS) expect([k, b[k]]).toEqual([k, a[k]]);
      });

      it(c.identical ? 'is byte-identical to qemu-img’s file' : 'has the same length as qemu-img’s file (placement differs)', () => {
        expect(fs.statSync(ours(file)).size).toBe(fs.statSync(theirs(file)).size);
        if (c.identical) expect(sameBytes(ours(file), theirs(file))).toBe(true);
        if (c.opts.dataFile) expect(fs.statSync(ours(c.opts.dataFile)).size).toBe(fs.statSync(theirs(c.opts.dataFile)).size);
      });

      if (c.opts.preallocation && c.opts.preallocation !== 'off') {
        it('qemu-img map shows the same allocation as for qemu-img’s image', () => {
          const strip = (m: Record<string, unknown>[]) => (c.identical ? m : m.map(({ offset: _o, ...rest }) => rest));
          expect(strip(mapJson(ours(file)))).toEqual(strip(mapJson(theirs(file))));
        });
      }

      it('our driver opens it read-only and reads zeros (or the backing data)', async () => {
        const layer = new BlockLayer();
        try {
          const d = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: ours(file), readOnly: true } });
          const size = c.size ?? (c.backing ? 32 * MiB : 64 * MiB);
          expect(d.length).toBe(Math.ceil(size / 512) * 512);
          const n = Math.min(d.length, 2 * MiB);
          const head = await d.read(0, n);
          const fill = c.backing ? 0x5a : 0;
          expect(head.subarray(0, Math.min(n, MiB)).every((x) => x === fill)).toBe(true);
          expect(head.subarray(Math.min(n, MiB)).every((x) => x === 0)).toBe(true);
          if (d.length > n) expect((await d.read(d.length - MiB, MiB)).every((x) => x === 0)).toBe(true);
          await d.close();
        } finally {
          await layer.close();
        }
      });

      // last: it writes into our image
      it('qemu-io writes and reads it, and qemu-img check stays clean', () => {
        if ((c.size ?? 64 * MiB) < 64 * 1024) return;
        const out = execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'read -P 0x11 0 64k', ours(file)], { encoding: 'utf8', cwd: path.join(dir, 'ours') });
        expect(out).toMatch(/wrote 65536\/65536 bytes/);
        expect(out).toMatch(/read 65536\/65536 bytes/);
        expect(out).not.toMatch(/Pattern verification failed/);
        expectClean(ours(file));
      });
    });
  }

  it('takes the size and the format of the backing file when they are omitted (format probed)', async () => {
    const made = await createImage(ours('probed.qcow2'), { format: 'qcow2', backing: 'base.qcow2' });
    expect(made).toMatchObject({ virtualSize: 32 * MiB, backingFormat: 'qcow2' });
    expect(infoJson(ours('probed.qcow2'))).toMatchObject({ 'virtual-size': 32 * MiB, 'backing-filename': 'base.qcow2', 'backing-filename-format': 'qcow2' });
    expectClean(ours('probed.qcow2'));
  });

  it('refuses a backing file that does not exist (ENOENT naming the field) and creates nothing', async () => {
    const e = await rejection(createImage(ours('nobase.qcow2'), { format: 'qcow2', backing: 'missing.qcow2', backingFormat: 'qcow2', size: MiB }));
    expect(e).toMatchObject({ code: 'ENOENT', field: 'backing' });
    expect(fs.existsSync(ours('nobase.qcow2'))).toBe(false);
  });
});

describe('createImage: files', () => {
  it('bad options reject with EINVAL naming the field and create nothing', async () => {
    const f = path.join(dir, 'bad.qcow2');
    expect(await rejection(createImage(f, { format: 'qcow2', size: MiB, clusterSize: 3000 }))).toMatchObject({ code: 'EINVAL', field: 'clusterSize' });
    expect(await rejection(createImage(f, { format: 'qed', size: MiB } as never))).toMatchObject({ code: 'EINVAL', field: 'format' });
    expect(fs.existsSync(f)).toBe(false);
    expect(fs.readdirSync(dir).filter((n) => n.includes('bad'))).toEqual([]);
  });

  it('replaces an existing file as qemu-img does, but leaves it untouched when creation fails', async () => {
    const f = path.join(dir, 'existing.qcow2');
    fs.writeFileSync(f, 'precious');
    // the data file's directory does not exist: creation fails after the layout was planned
    const e = await rejection(createImage(f, { format: 'qcow2', size: MiB, dataFile: 'no/such/dir/d.raw' }));
    expect(e).toMatchObject({ code: 'ENOENT' });
    expect(fs.readFileSync(f, 'utf8')).toBe('precious');
    expect(fs.readdirSync(dir).filter((n) => n.startsWith('.existing'))).toEqual([]);
    await createImage(f, { format: 'qcow2', size: MiB });
    expect(fs.readFileSync(f).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
  });

  it('refuses to replace the image’s own backing file', async () => {
    const f = path.join(dir, 'self.raw');
    fs.writeFileSync(f, Buffer.alloc(4096, 7));
    const e = await rejection(createImage(f, { format: 'qcow2', backing: 'self.raw', backingFormat: 'raw' }));
    expect(e).toMatchObject({ code: 'EINVAL' });
    expect(fs.readFileSync(f).every((b) => b === 7)).toBe(true);
  });

  it('raw: sparse (off), reserved (falloc) or written (full), size rounded up to sectors', async () => {
    for (const preallocation of ['off', 'falloc', 'full'] as const) {
      const f = path.join(dir, `r-${preallocation}.raw`);
      const made = await createImage(f, { format: 'raw', size: 4 * MiB - 100, preallocation });
      expect(made.virtualSize).toBe(4 * MiB);
      const st = fs.statSync(f);
      expect(st.size).toBe(4 * MiB);
      if (preallocation === 'off') expect(st.blocks * 512).toBeLessThan(MiB);
      else expect(st.blocks * 512).toBeGreaterThanOrEqual(4 * MiB);
      expect(fs.readFileSync(f).every((b) => b === 0)).toBe(true);
    }
  });

  it('qcow2 preallocation=full writes the data area; falloc reserves it; metadata leaves it sparse', async () => {
    const used: Record<string, number> = {};
    for (const preallocation of ['metadata', 'falloc', 'full'] as const) {
      const f = path.join(dir, `q-${preallocation}.qcow2`);
      await createImage(f, { format: 'qcow2', size: 16 * MiB, preallocation });
      used[preallocation] = fs.statSync(f).blocks * 512;
      expect(fs.statSync(f).size).toBeGreaterThanOrEqual(16 * MiB);
    }
    expect(used.metadata).toBeLessThan(MiB);
    expect(used.falloc).toBeGreaterThanOrEqual(16 * MiB);
    expect(used.full).toBeGreaterThanOrEqual(16 * MiB);
  });
});

describe.skipIf(!available)('blocklayer create (CLI)', () => {
  const cli = (...args: string[]) => spawnSync(process.execPath, [...CLI, 'create', ...args], { encoding: 'utf8', cwd: path.join(import.meta.dirname, '../..') });

  it('makes what qemu-img create makes, with its option names, and prints the Formatting line', () => {
    const f = ours('cli.qcow2');
    const r = cli('-f', 'qcow2', '-o', 'cluster_size=4k,lazy_refcounts=on,refcount_bits=8', f, '10M');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Formatting '.*cli\.qcow2', fmt=qcow2 cluster_size=4096 .*size=10485760/);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k,lazy_refcounts=on,refcount_bits=8', theirs('cli.qcow2'), '10M']);
    expect(fs.readFileSync(f).equals(fs.readFileSync(theirs('cli.qcow2')))).toBe(true);
    expectClean(f);
  });

  it('takes -b with -F, and like qemu-img refuses -b without -F, naming the probed format', () => {
    const ok = cli('-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', ours('cli-over.qcow2'));
    expect(ok.status).toBe(0);
    expect(infoJson(ours('cli-over.qcow2'))).toMatchObject({ 'virtual-size': 32 * MiB, 'backing-filename-format': 'qcow2' });
    const r = cli('-f', 'qcow2', '-b', 'base.qcow2', ours('cli-noF.qcow2'));
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/backing file specified without backing format \(detected format of qcow2: add -F qcow2\)/);
    expect(fs.existsSync(ours('cli-noF.qcow2'))).toBe(false);
  });

  it('bad options exit 1 with one line naming the option', () => {
    for (const [args, pattern] of [
      [['-f', 'qcow2', '-o', 'cluster_size=1000'], /cluster_size: 1000 is not a power of two/],
      [['-f', 'qcow2', '-o', 'compat=0.10,lazy_refcounts=on'], /lazy_refcounts: needs compat 1.1/],
      [['-f', 'qcow2', '-o', 'frobnicate=1'], /invalid parameter 'frobnicate'/],
    ] as [string[], RegExp][]) {
      const r = cli(...args, ours('cli-bad.qcow2'), '1M');
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(pattern);
      expect(fs.existsSync(ours('cli-bad.qcow2'))).toBe(false);
    }
  });
});
