import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveQemuTools } from '../helpers/qemu-images.js';
import { haveProgram } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const FIX = path.join(import.meta.dirname, '../fixtures/qcow2');
const available = haveQemuTools();
if (!available) console.log('cli --output tests skipped: qemu-img/qemu-io not installed (apt-get install qemu-utils)');

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
let dir = '';
/** qemu-img in the test directory (a relative data file name is created there). */
const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { encoding: 'utf8', cwd: dir || undefined });

/** qemu-img info's JSON without what we cannot know (a snapshot's icount, kept in the snapshot's extra data). */
function withoutIcount(info: unknown): unknown {
  if (Array.isArray(info)) return info.map(withoutIcount);
  const o = info as { snapshots?: Record<string, unknown>[] };
  if (o.snapshots) o.snapshots = o.snapshots.map(({ icount: _i, ...rest }) => rest);
  return o;
}

const images: Record<string, string> = {};

beforeAll(() => {
  if (!available) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-cli-output-'));
  // a raw file with data and a hole; a qcow2 image with an external data file and a persistent bitmap
  images.raw = path.join(dir, 'r.raw');
  qemuImg('create', '-q', '-f', 'raw', images.raw, '1M');
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 7 64k 64k', images.raw], { stdio: 'ignore' });
  images.dataFile = path.join(dir, 'd.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'data_file=d.raw,data_file_raw=on', images.dataFile, '1M');
  qemuImg('bitmap', '--add', images.dataFile, 'b0');
  images.over = path.join(FIX, 'over.qcow2');
  images.snap = path.join(FIX, 'snap.qcow2');
  images.v2 = path.join(FIX, 'v2.qcow2');
  images.zstd = path.join(FIX, 'zstd.qcow2');
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!available)('--output=human|json as qemu-img spells it', () => {
  it('info --output=json is qemu-img info --output=json, field by field (v3, v2, zstd, snapshots, backing, data file and bitmaps, raw); --json is its alias', () => {
    for (const name of ['over', 'snap', 'v2', 'zstd', 'dataFile', 'raw']) {
      const theirs = withoutIcount(JSON.parse(qemuImg('info', '--output=json', images[name])));
      const ours = cli('info', '--output=json', images[name]);
      expect([name, ours.code, ours.err]).toEqual([name, 0, '']);
      expect([name, JSON.parse(ours.out)]).toEqual([name, theirs]);
      // qemu-img's layout: four spaces a level
      expect(ours.out).toMatch(/^\{\n {4}"/);
      expect(cli('info', '--json', images[name]).out).toBe(ours.out);
    }
    const chain = cli('info', '--output=json', '--backing-chain', images.over);
    expect(JSON.parse(chain.out)).toEqual(withoutIcount(JSON.parse(qemuImg('info', '--output=json', '--backing-chain', images.over))));
  }, 120_000);

  it.skipIf(!haveProgram('qemu-nbd'))('info --output=json of an nbd export (raw, and qcow2 probed) is qemu-img info --output=json: the URI as filename, no dirty-flag or actual-size for raw', () => {
    const pids: number[] = [];
    try {
      const uris: string[] = [];
      for (const [name, image] of [
        ['r', images.raw],
        ['q', images.zstd],
      ]) {
        const sock = path.join(dir, `${name}.sock`);
        const pidFile = path.join(dir, `${name}.pid`);
        execFileSync('qemu-nbd', ['--fork', '--persistent', '--pid-file', pidFile, '-r', '-k', sock, '-x', name, '-f', 'raw', image], { stdio: 'ignore' });
        pids.push(Number(fs.readFileSync(pidFile, 'utf8')));
        uris.push(`nbd+unix:///${name}?socket=${sock}`);
      }
      for (const uri of uris) {
        const ours = cli('info', '--output=json', uri);
        expect([uri, ours.code, ours.err]).toEqual([uri, 0, '']);
        expect(JSON.parse(ours.out)).toEqual(JSON.parse(qemuImg('info', '--output=json', uri)));
      }
    } finally {
      for (const pid of pids) process.kill(pid, 'SIGTERM');
    }
  }, 60_000);

  it('info --output=human (the default) prints every line qemu-img info prints, disk size included, in its order', () => {
    for (const name of ['over', 'v2', 'dataFile', 'raw']) {
      // the snapshot table aside (qemu-img adds an ICOUNT column we cannot fill)
      const theirs = qemuImg('info', images[name]).trimEnd().split('\n');
      const ours = cli('info', '--output=human', images[name]);
      expect(ours.code).toBe(0);
      expect(cli('info', images[name]).out).toBe(ours.out);
      const lines = ours.out.trimEnd().split('\n');
      let at = 0;
      for (const line of theirs) {
        const found = lines.indexOf(line, at);
        expect([name, line, found >= 0]).toEqual([name, line, true]);
        at = found + 1;
      }
    }
  }, 120_000);

  it('map --output=human is qemu-img map (data ranges, where and in which file, backing files included); --output=json and --json are the default', () => {
    for (const name of ['over', 'raw', 'zstd']) {
      const json = cli('map', images[name]);
      expect(JSON.parse(json.out)).toEqual(JSON.parse(qemuImg('map', '--output=json', images[name])));
      expect(cli('map', '--output=json', images[name]).out).toBe(json.out);
      expect(cli('map', '--json', images[name]).out).toBe(json.out);
      if (name === 'zstd') continue;
      const human = cli('map', '--output=human', images[name]);
      expect([name, human.code, human.out]).toEqual([name, 0, qemuImg('map', images[name])]);
    }
    // compressed clusters have no place in a file to show: refused, as qemu-img refuses it
    const theirs = spawnSync('qemu-img', ['map', images.zstd], { encoding: 'utf8' });
    const ours = cli('map', '--output=human', images.zstd);
    expect([ours.code, theirs.status]).toEqual([1, 1]);
    expect(theirs.stderr).toContain('File contains external, encrypted or compressed clusters.');
    expect(ours.err).toBe('blocklayer map: ENOTSUP: File contains external, encrypted or compressed clusters.\n');
    expect(ours.out).toBe('');
  }, 120_000);

  it('check --output=json is qemu-img check --output=json (--json its alias); --output=human the report', () => {
    const json = cli('check', '--output=json', images.over);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.out)).toEqual(JSON.parse(qemuImg('check', '--output=json', images.over)));
    expect(cli('check', '--json', images.over).out).toBe(json.out);
    expect(cli('check', '--output=human', images.over).out).toBe(qemuImg('check', images.over));
  }, 60_000);

  it('--output other than human or json, or --json with --output=human: one line naming --output, exit 1', () => {
    for (const verb of ['info', 'map', 'check']) {
      const r = cli(verb, '--output=xml', images.over);
      expect([verb, r.code, r.err]).toEqual([verb, 1, `blocklayer ${verb}: EINVAL: --output: 'xml' is not human or json\n`]);
    }
    const both = cli('info', '--json', '--output', 'human', images.over);
    expect([both.code, both.err]).toEqual([1, 'blocklayer info: EINVAL: --json and --output=human: give one of them\n']);
  }, 60_000);
});
