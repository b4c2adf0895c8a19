import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startQemuDaemon, stopPid } from '../helpers/qemu-daemons.js';
import { haveProgram } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const haveQemuImg = haveProgram('qemu-img');
const haveInterop = haveQemuImg && haveProgram('qemu-io') && haveProgram('qemu-nbd') && haveProgram('nbdinfo');

let dir = '';

function blocklayer(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, 'bitmap', ...args], { encoding: 'utf8' });
  return { code: r.status, err: r.stderr };
}

function qemuImg(...args: string[]) {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8', cwd: dir });
  return { code: r.status, err: r.stderr, out: r.stdout };
}

/** A fresh copy of an image made by `make`, under `name`. */
function image(name: string, format: 'qcow2' | 'raw', size = '4M'): string {
  const file = path.join(dir, name);
  fs.rmSync(file, { force: true });
  execFileSync('qemu-img', ['create', '-q', '-f', format, file, size]);
  return file;
}

/** qemu-img's one error line without its program prefix; a node name QEMU generates (#block123) as a pattern. */
function qemuMessage(stderr: string): RegExp {
  const line = stderr
    .split('\n')
    .filter((l) => l.startsWith('qemu-img: '))
    .map((l) => l.slice('qemu-img: '.length))
    .join('\n');
  const escaped = line.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/#block\d+/g, '\\S+');
  return new RegExp(escaped);
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-cli-bitmap-'));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('blocklayer bitmap: the arguments as qemu-img bitmap takes them', () => {
  /** Each: arguments before FILENAME BITMAP (or all of them), run by both on fresh copies of the same image. */
  const CASES: { name: string; args: (img: string) => string[]; format?: 'qcow2' | 'raw' }[] = [
    { name: 'no operation', args: (img) => [img, 'b0'] },
    { name: 'no bitmap name', args: (img) => ['--add', img] },
    { name: 'a third positional', args: (img) => ['--add', img, 'b0', 'extra'] },
    { name: '-g without --add', args: (img) => ['--clear', '-g', '64k', img, 'b0'] },
    { name: '-F without -b', args: (img) => ['--clear', '-F', 'qcow2', img, 'b0'] },
    { name: '-b without --merge', args: (img) => ['--clear', '-b', img, img, 'b0'] },
    { name: '-g not a size', args: (img) => ['--add', '-g', 'x', img, 'b0'] },
    { name: '-g negative', args: (img) => ['--add', '-g', '-1', img, 'b0'] },
    { name: '-g not a power of 2', args: (img) => ['--add', '-g', '1000', img, 'b0'] },
    { name: '-g under 512', args: (img) => ['--add', '-g', '256', img, 'b0'] },
    { name: '-g 4G (wraps to 0 as uint32)', args: (img) => ['--add', '-g', '4G', img, 'b0'] },
    { name: 'a raw image cannot store bitmaps', args: (img) => ['--add', '-f', 'raw', img, 'b0'], format: 'raw' },
    { name: 'remove of a missing bitmap', args: (img) => ['--remove', img, 'zz'] },
    { name: 'enable of a missing bitmap', args: (img) => ['--enable', img, 'zz'] },
    { name: 'clear of a missing bitmap', args: (img) => ['--clear', img, 'zz'] },
    { name: 'merge from a missing bitmap', args: (img) => ['--merge', 'zz', img, 'b0'] },
    { name: 'operations in order: disable before add finds nothing', args: (img) => ['--disable', '--add', img, 'b3'] },
    { name: '--image-opts with -f', args: (img) => ['--add', '--image-opts', '-f', 'qcow2', img, 'b0'] },
  ];

  for (const c of CASES) {
    it.skipIf(!haveQemuImg)(`${c.name}: exit code and message as qemu-img's`, () => {
      const format = c.format ?? 'qcow2';
      const theirs = qemuImg('bitmap', ...c.args(image(`q.${format}`, format)));
      const ours = blocklayer(...c.args(image(`b.${format}`, format)));
      expect(theirs.code).toBe(1);
      expect(ours.code).toBe(theirs.code);
      expect(ours.err).toMatch(qemuMessage(theirs.err));
    });
  }

  it('-h prints the usage with qemu-img bitmap\'s synopsis', () => {
    const r = spawnSync(process.execPath, [...CLI, 'bitmap', '-h'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: blocklayer bitmap \(--merge SOURCE \| --add \| --remove \| --clear \| --enable \| --disable\)\.\.\. \[-b SOURCE_FILE \[-F SOURCE_FMT\]\] \[-g GRANULARITY\]/);
  });
});

type StoredInfo = { name: string; granularity: number; flags: string[] };

/** The bitmaps qemu-img info finds in an image. */
function storedBitmaps(file: string): StoredInfo[] {
  const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', file], { encoding: 'utf8' })) as { 'format-specific'?: { data?: { bitmaps?: StoredInfo[] } } };
  return info['format-specific']?.data?.bitmaps ?? [];
}

/** The dirty map of each bitmap as QEMU's own reader serves it (qemu-nbd -B NAME, nbdinfo --map). */
async function dirtyMaps(file: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const { name } of storedBitmaps(file)) {
    const sock = path.join(dir, `map-${process.hrtime.bigint()}.sock`);
    const pid = startQemuDaemon('qemu-nbd', ['-r', '-B', name, '-k', sock, '-f', 'qcow2', file], dir);
    try {
      const map = JSON.parse(execFileSync('nbdinfo', [`--map=qemu:dirty-bitmap:${name}`, '--json', `nbd+unix:///?socket=${sock}`], { encoding: 'utf8' })) as { offset: number; length: number; type: number }[];
      out[name] = map.filter((e) => e.type === 1).map((e) => [e.offset, e.length]);
    } finally {
      await stopPid(pid);
    }
  }
  return out;
}

describe('blocklayer bitmap on qcow2 images, judged by qemu-img, qemu-nbd and nbdinfo', () => {
  let base = '';
  let other = '';

  beforeAll(() => {
    if (!haveInterop) return;
    // base: bitmap a (64k, recording) dirtied by QEMU, d (4k, disabled) clean; other: s dirtied elsewhere
    base = image('base.qcow2', 'qcow2');
    execFileSync('qemu-img', ['bitmap', '--add', '-g', '64k', base, 'a']);
    execFileSync('qemu-img', ['bitmap', '--add', '-g', '4k', '--disable', base, 'd']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write 0 64k', '-c', 'write 1M 4k', '-c', 'write 3146240 1k', base], { stdio: 'ignore' });
    other = image('other.qcow2', 'qcow2');
    execFileSync('qemu-img', ['bitmap', '--add', '-g', '512', other, 's']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write 2M 512', '-c', 'write 520k 8k', other], { stdio: 'ignore' });
  });

  /** Operations (before FILENAME BITMAP), the bitmap, and whether qemu-img fails. */
  const CASES: { name: string; ops: () => string[]; bitmap: string; fails?: boolean }[] = [
    { name: 'add with -g 128k', ops: () => ['--add', '-g', '128k'], bitmap: 'n' },
    { name: 'add, then disable (the default granularity: the cluster size)', ops: () => ['--add', '--disable'], bitmap: 'n' },
    { name: 'merge a recording bitmap QEMU dirtied into a disabled one of another granularity', ops: () => ['--merge', 'a'], bitmap: 'd' },
    { name: 'clear then disable', ops: () => ['--clear', '--disable'], bitmap: 'a' },
    { name: 'enable then merge', ops: () => ['--enable', '--merge', 'a'], bitmap: 'd' },
    { name: 'remove', ops: () => ['--remove'], bitmap: 'a' },
    { name: 'merge from another image (-b OTHER -F qcow2)', ops: () => ['--merge', 's', '-b', other, '-F', 'qcow2'], bitmap: 'a' },
    { name: 'add then two merges', ops: () => ['--add', '--merge', 'a', '--merge', 'd'], bitmap: 'n' },
    { name: 'a failure midway keeps what went before', ops: () => ['--merge', 'a', '--add'], bitmap: 'd', fails: true },
  ];

  for (const c of CASES) {
    it.skipIf(!haveInterop)(`${c.name}: the same bitmaps, flags and dirty maps as qemu-img bitmap makes`, { timeout: 60_000 }, async () => {
      const theirs = path.join(dir, 'theirs.qcow2');
      const ours = path.join(dir, 'ours.qcow2');
      fs.copyFileSync(base, theirs);
      fs.copyFileSync(base, ours);
      const q = qemuImg('bitmap', ...c.ops(), theirs, c.bitmap);
      const b = blocklayer(...c.ops(), ours, c.bitmap);
      expect(q.code).toBe(c.fails ? 1 : 0);
      expect(b.code).toBe(q.code);
      if (c.fails) expect(b.err).toMatch(qemuMessage(q.err));
      const byName = (l: StoredInfo[]) => [...l].sort((x, y) => x.name.localeCompare(y.name));
      expect(byName(storedBitmaps(ours))).toEqual(byName(storedBitmaps(theirs)));
      expect(await dirtyMaps(ours)).toEqual(await dirtyMaps(theirs));
      // what we stored leaves the image consistent
      expect(qemuImg('check', ours).code).toBe(0);
    });
  }

  it.skipIf(!haveInterop)('--image-opts names the node tree as qemu-img takes it', () => {
    const img = image('opts.qcow2', 'qcow2');
    const opts = `driver=qcow2,file.driver=file,file.filename=${img}`;
    expect(blocklayer('--add', '-g', '4k', '--image-opts', opts, 'mine').code).toBe(0);
    expect(qemuImg('bitmap', '--add', '--image-opts', opts, 'theirs').code).toBe(0);
    expect(storedBitmaps(img)).toEqual([
      { name: 'mine', granularity: 4096, flags: ['auto'] },
      { name: 'theirs', granularity: 65536, flags: ['auto'] },
    ]);
  });

  it.skipIf(!haveInterop)('bitmaps we add are dirtied by QEMU, and what we merge from them QEMU serves', { timeout: 60_000 }, async () => {
    const img = image('fresh.qcow2', 'qcow2');
    expect(blocklayer('--add', '-g', '64k', img, 'rec').code).toBe(0);
    expect(blocklayer('--add', '--disable', img, 'copy').code).toBe(0);
    expect(storedBitmaps(img)).toEqual([
      { name: 'rec', granularity: 65536, flags: ['auto'] },
      { name: 'copy', granularity: 65536, flags: [] },
    ]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write 128k 4k', img], { stdio: 'ignore' });
    expect(blocklayer('--merge', 'rec', img, 'copy').code).toBe(0);
    expect(await dirtyMaps(img)).toEqual({ rec: [[131072, 65536]], copy: [[131072, 65536]] });
  });
});
