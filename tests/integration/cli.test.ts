import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';

const FIX = path.join(import.meta.dirname, '../fixtures/qcow2');
const expected = JSON.parse(fs.readFileSync(path.join(FIX, 'expected.json'), 'utf8')) as Record<string, string>;

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('blocklayer CLI', () => {
  it('info --json reports format, size, cluster size, backing and snapshots', () => {
    const r = cli('info', path.join(FIX, 'over.qcow2'), '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ format: 'qcow2', 'virtual-size': 98304, 'cluster-size': 512, 'backing-filename': 'base.qcow2', 'backing-filename-format': 'qcow2' });
    const s = JSON.parse(cli('info', path.join(FIX, 'snap.qcow2'), '--json').out);
    expect(s.snapshots.map((x: { name: string }) => x.name)).toEqual(['one']);
  });

  it('info --backing-chain lists every image of the chain', () => {
    const r = cli('info', path.join(FIX, 'over.qcow2'), '--json', '--backing-chain');
    expect(JSON.parse(r.out).map((x: { format: string; 'virtual-size': number }) => [x.format, x['virtual-size']])).toEqual([
      ['qcow2', 98304],
      ['qcow2', 65536],
    ]);
  });

  it('map prints the allocation map as qemu-img map --output=json does', () => {
    const r = cli('map', path.join(FIX, 'v3.qcow2'));
    expect(r.code).toBe(0);
    const map = JSON.parse(r.out) as { start: number; length: number; data: boolean }[];
    expect(map[0]).toMatchObject({ start: 0, depth: 0, present: true, data: true, zero: false });
    expect(map.reduce((n, e) => n + e.length, 0)).toBe(65536);
  });

  it('convert writes the guest view as raw, also of a snapshot', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-cli-'));
    try {
      const out = path.join(dir, 'out.raw');
      expect(cli('convert', path.join(FIX, 'zstd.qcow2'), out, '-q').code).toBe(0);
      expect(createHash('sha256').update(fs.readFileSync(out)).digest('hex')).toBe(expected['zstd.qcow2']);
      expect(cli('convert', path.join(FIX, 'snap.qcow2'), out, '--snapshot', 'one', '-q').code).toBe(0);
      expect(createHash('sha256').update(fs.readFileSync(out)).digest('hex')).toBe(expected['snap.qcow2@one']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('errors are one clear line and exit code 1', () => {
    const r = cli('info', '/no/such/image.qcow2');
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/ENOENT: \/no\/such\/image\.qcow2: no such file/);
    expect(cli('frobnicate').code).toBe(1);
    expect(cli('info').err).toMatch(/usage: blocklayer info/);
  });

  it('--help gives convert the options it takes (-O qcow2, -c, -o), not a raw-only usage', () => {
    const help = cli('--help');
    expect([help.code, help.err]).toEqual([0, '']);
    expect(help.out).toMatch(/blocklayer convert \[-f FMT\] (\[-U\] )?\[-O raw\|qcow2\] (\[-t none\|writeback\] )?\[-c\] \[-o k=v,…\] .*IMAGE OUTPUT/);
  });
});

describe('blocklayer CLI: help, version, unknown options', () => {
  const VERBS = ['info', 'map', 'check', 'convert', 'create', 'commit', 'bench', 'serve'];

  it('blocklayer -h / --help: every verb on stdout, exit 0; no arguments: two lines on stderr, exit 1, as qemu-img', () => {
    for (const flag of ['-h', '--help']) {
      const r = cli(flag);
      expect([r.code, r.err]).toEqual([0, '']);
      expect(r.out).toMatch(/^usage: blocklayer COMMAND/);
      for (const v of VERBS) expect(r.out).toContain(`  blocklayer ${v} `);
    }
    const none = cli();
    expect([none.code, none.out]).toEqual([1, '']);
    expect(none.err).toBe("blocklayer: Not enough arguments\nTry 'blocklayer --help' for more information\n");
  });

  it('blocklayer --version / -V: "blocklayer version X.Y.Z" from package.json on stdout, exit 0', () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) expect(cli(flag)).toEqual({ code: 0, out: `blocklayer version ${version}\n`, err: '' });
  });

  it('every verb answers -h and --help with its usage and options on stdout, exit 0, even beside other arguments', () => {
    VERBS.forEach((v, i) => {
      // -h for half the verbs, --help for the other half, one beside a bad argument (help wins, as in qemu-img)
      const r = cli(v, ...(i % 2 ? ['-h'] : ['--help']), ...(i === 0 ? ['--bogus'] : []));
      expect([v, r.code, r.err]).toEqual([v, 0, '']);
      expect(r.out).toMatch(new RegExp(`^usage: blocklayer ${v} `));
      expect(r.out).toMatch(/-h, --help +this help/);
    });
    // after `--`, -h is an argument, not a request for help
    expect(cli('info', '--', '-h').err).toMatch(/ENOENT: -h: no such file/);
  }, 90_000);

  it('an unknown option or a missing value is one line on stderr naming the verb and the option, exit 1', () => {
    for (const [v, opt] of [
      ['info', '--bogus'],
      ['map', '-z'],
      ['check', '--frob'],
      ['convert', '--nope'],
      ['bench', '--bogus'],
    ]) {
      const r = cli(v, opt, 'x');
      expect([r.code, r.out]).toEqual([1, '']);
      expect(r.err).toBe(`blocklayer ${v}: unknown option '${opt}' (see 'blocklayer ${v} --help')\n`);
    }
    const missing = cli('info', 'x', '-f');
    expect([missing.code, missing.err]).toEqual([1, "blocklayer info: option '-f, --format <value>' argument missing (see 'blocklayer info --help')\n"]);
    const verb = cli('frobnicate');
    expect(verb.code).toBe(1);
    expect(verb.err.trim().split('\n')).toEqual([expect.stringMatching(/^blocklayer: unknown command 'frobnicate' \(commands: info, map/)]);
  }, 90_000);
});
