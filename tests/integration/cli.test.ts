import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const MAIN = path.join(import.meta.dirname, '../../src/cli/main.ts');
const FIX = path.join(import.meta.dirname, '../fixtures/qcow2');
const expected = JSON.parse(fs.readFileSync(path.join(FIX, 'expected.json'), 'utf8')) as Record<string, string>;

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', MAIN, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('blocklayer CLI', () => {
  it('info --json reports format, size, cluster size, backing and snapshots', () => {
    const r = cli('info', path.join(FIX, 'over.qcow2'), '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ format: 'qcow2', virtualSize: 98304, clusterSize: 512, backingFilename: 'base.qcow2', backingFilenameFormat: 'qcow2' });
    const s = JSON.parse(cli('info', path.join(FIX, 'snap.qcow2'), '--json').out);
    expect(s.snapshots.map((x: { name: string }) => x.name)).toEqual(['one']);
  });

  it('info --backing-chain lists every image of the chain', () => {
    const r = cli('info', path.join(FIX, 'over.qcow2'), '--json', '--backing-chain');
    expect(JSON.parse(r.out).map((x: { format: string; virtualSize: number }) => [x.format, x.virtualSize])).toEqual([
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
    expect(help.code).toBe(0);
    expect(help.err).toMatch(/blocklayer convert \[-f FMT\] \[-O raw\|qcow2\] \[-c\] \[-o k=v,…\] IMAGE OUTPUT/);
  });
});
