import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveProgram } from '../helpers/tools.js';

const MAIN = path.join(import.meta.dirname, '../../src/cli/main.ts');
const haveQemuImg = haveProgram('qemu-img');

let dir = '';

function blocklayer(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', MAIN, 'bitmap', ...args], { encoding: 'utf8' });
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
    const r = spawnSync(process.execPath, ['--import', 'tsx', MAIN, 'bitmap', '-h'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: blocklayer bitmap \(--merge SOURCE \| --add \| --remove \| --clear \| --enable \| --disable\)\.\.\. \[-b SOURCE_FILE \[-F SOURCE_FMT\]\] \[-g GRANULARITY\]/);
  });
});
