import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuProgress } from '../../src/cli/convert.js';
import { haveProgram } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const haveQemuImg = haveProgram('qemu-img');
if (!haveQemuImg) console.log('convert -p beside qemu-img convert -p skipped: qemu-img not installed (apt-get install qemu-utils)');

let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-convert-progress-'));
  // 64 MiB with data at the start and in the middle: 16 windows of 4 MiB
  const fd = fs.openSync(path.join(dir, 'in.raw'), 'w');
  fs.writeSync(fd, Buffer.alloc(1 << 20, 3), 0, 1 << 20, 0);
  fs.writeSync(fd, Buffer.alloc(1 << 20, 4), 0, 1 << 20, 40 << 20);
  fs.ftruncateSync(fd, 64 << 20);
  fs.closeSync(fd);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** qemu-img's progress as util/qemu-progress.c prints it: "    (%3.2f/100%)\r" entries, then a newline. */
const SHAPE = /^( {4}\(\d{1,3}\.\d\d\/100%\)\r)+\n$/;
const values = (out: string) => out.trimEnd().split('\r').map((e) => Number(/\(([\d.]+)\/100%\)/.exec(e)![1]));

describe('convert -p where stderr is not a terminal: qemu-img convert -p output', () => {
  it('qemuProgress prints 0, each move of more than 1 point, 100, and at the end 100 again and a newline, as qemu-img', () => {
    let out = '';
    const p = qemuProgress((s) => {
      out += s;
    });
    for (const v of [0.5, 1.0, 1.2, 2.5, 3.0, 50, 50.4, 99.5, 100]) p.update(v);
    p.end();
    const e = (v: string) => `    (${v}/100%)\r`;
    expect(out).toBe(`${e('0.00')}${e('1.20')}${e('2.50')}${e('50.00')}${e('99.50')}${e('100.00')}${e('100.00')}\n`);
    // C's %.2f: halfway rounds to even
    let half = '';
    qemuProgress((s) => {
      half += s;
    }).update(3.125);
    expect(half).toContain('    (3.12/100%)\r');
  });

  it('blocklayer convert -p with stdout and stderr piped: the "    (x.xx/100%)" entries on stdout, from 0.00 to 100.00, nothing on stderr; the same shape as qemu-img convert -p', () => {
    const r = spawnSync(process.execPath, [...CLI, 'convert', '-p', path.join(dir, 'in.raw'), path.join(dir, 'ours.raw')], { encoding: 'utf8' });
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(SHAPE);
    const ours = values(r.stdout);
    expect(ours[0]).toBe(0);
    expect(ours.slice(-2)).toEqual([100, 100]);
    for (let i = 1; i < ours.length - 1; i++) expect(ours[i]).toBeGreaterThan(ours[i - 1]);
    expect(ours.length).toBeGreaterThan(3);
    expect(fs.readFileSync(path.join(dir, 'ours.raw')).equals(fs.readFileSync(path.join(dir, 'in.raw')))).toBe(true);
    // without -p, or with -q: no progress
    for (const flags of [[], ['-q', '-p']]) {
      const quiet = spawnSync(process.execPath, [...CLI, 'convert', ...flags, path.join(dir, 'in.raw'), path.join(dir, 'q.raw')], { encoding: 'utf8' });
      expect([quiet.status, quiet.stdout, quiet.stderr]).toEqual([0, '', '']);
    }
    if (haveQemuImg) {
      const theirs = execFileSync('qemu-img', ['convert', '-p', '-O', 'raw', path.join(dir, 'in.raw'), path.join(dir, 'theirs.raw')], { encoding: 'utf8' });
      expect(theirs).toMatch(SHAPE);
      expect(values(theirs)[0]).toBe(0);
      expect(values(theirs).slice(-2)).toEqual([100, 100]);
    }
  }, 60_000);
});
