import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';

const LOCK_CHILD = path.join(import.meta.dirname, '../helpers/open-file-child.ts');

let dir: string;
const children: ChildProcess[] = [];

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const sha = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const FIXTURES = path.join(import.meta.dirname, '../fixtures/qcow2');
/** A copy of a checked-in qemu-img-made image (so these tests run without qemu-utils). */
function fixture(name: string, as = name): string {
  const to = path.join(dir, as);
  fs.copyFileSync(path.join(FIXTURES, name), to);
  return to;
}
/** Files in the test directory other than the given ones (temporary outputs left behind). */
const leftovers = (...known: string[]) => fs.readdirSync(dir).filter((f) => !known.includes(f));

/** The zlib fixture (every cluster compressed) with the data of its first compressed cluster overwritten with garbage. */
function corruptCompressedImage(name: string): string {
  const img = fixture('zlib.qcow2', name);
  const f = fs.openSync(img, 'r+');
  try {
    const head = Buffer.alloc(48);
    fs.readSync(f, head, 0, 48, 0);
    const clusterBits = head.readUInt32BE(20);
    const l1 = Number(head.readBigUInt64BE(40));
    const e = Buffer.alloc(8);
    fs.readSync(f, e, 0, 8, l1);
    const l2 = Number(e.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    let entry = 0n;
    for (let i = 0; i < 1 << (clusterBits - 3) && !(entry & (1n << 62n)); i++) {
      fs.readSync(f, e, 0, 8, l2 + i * 8);
      entry = e.readBigUInt64BE(0);
    }
    expect(entry & (1n << 62n)).not.toBe(0n); // compressed
    const hostBits = 62n - BigInt(clusterBits - 8);
    const host = Number(entry & ((1n << hostBits) - 1n));
    fs.writeSync(f, Buffer.alloc(256, 0xff), 0, 256, host);
  } finally {
    fs.closeSync(f);
  }
  return img;
}

/** Spawns a child that opens `file` read-write through the library (exclusive flock) and keeps it open. */
function holdLock(file: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', LOCK_CHILD, file, 'rw'], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('\n')) (JSON.parse(out).ok ? resolve(child) : reject(new Error(out)));
    });
    child.on('error', reject);
  });
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-convert-safety-'));
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      await new Promise<void>((resolve) => {
        c.on('exit', () => resolve());
        c.stdin?.end();
        c.kill('SIGKILL');
      });
    }
  }
  for (const m of mounts.splice(0)) spawnSync('umount', [m]);
  fs.rmSync(dir, { recursive: true, force: true });
});
const mounts: string[] = [];

describe('convert refuses to write onto its own input', () => {
  it('onto the same path: exit 1, both paths named, input unchanged', () => {
    const img = path.join(dir, 'in.raw');
    fs.writeFileSync(img, Buffer.alloc(256 * 1024, 0x5a));
    const before = sha(img);
    const r = cli('convert', img, img, '-q');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/refus/);
    expect(r.err.split(img).length - 1).toBeGreaterThanOrEqual(2);
    expect(sha(img)).toBe(before);
    expect(leftovers('in.raw')).toEqual([]);
  });

  it('onto a symlink to the input: exit 1, both paths named, input unchanged', () => {
    const img = fixture('v3.qcow2', 'in.qcow2');
    fs.symlinkSync('in.qcow2', path.join(dir, 'link.raw'));
    const before = sha(img);
    const r = cli('convert', img, path.join(dir, 'link.raw'), '-q');
    expect(r.code).toBe(1);
    expect(r.err).toContain(img);
    expect(r.err).toContain(path.join(dir, 'link.raw'));
    expect(sha(img)).toBe(before);
    expect(fs.lstatSync(path.join(dir, 'link.raw')).isSymbolicLink()).toBe(true);
    expect(leftovers('in.qcow2', 'link.raw')).toEqual([]);
  });

  it('onto the backing file of a qcow2 overlay: exit 1, both paths named, backing file unchanged', () => {
    const base = fixture('base.qcow2'); // over.qcow2's backing file, named relatively
    const over = fixture('over.qcow2');
    const before = sha(base);
    const r = cli('convert', over, base, '-q');
    expect(r.code).toBe(1);
    expect(r.err).toContain(over);
    expect(r.err).toContain(base);
    expect(sha(base)).toBe(before);
    expect(leftovers('base.qcow2', 'over.qcow2')).toEqual([]);
  });

  it('onto a hard link of the input (same device and inode): refused', () => {
    const img = path.join(dir, 'in.raw');
    fs.writeFileSync(img, Buffer.alloc(64 * 1024, 0x17));
    fs.linkSync(img, path.join(dir, 'hard.raw'));
    const before = sha(img);
    const r = cli('convert', img, path.join(dir, 'hard.raw'), '-q');
    expect(r.code).toBe(1);
    expect(r.err).toContain(path.join(dir, 'hard.raw'));
    expect(sha(img)).toBe(before);
  });
});

describe('a failed convert leaves no partial output', () => {
  it('a corrupt compressed cluster: exit 1, no output file, no temporary file', () => {
    const img = corruptCompressedImage('bad.qcow2');
    const out = path.join(dir, 'out.raw');
    const r = cli('convert', img, out, '-q');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ECORRUPT/);
    expect(r.err).toMatch(/removed partial output/);
    expect(fs.existsSync(out)).toBe(false);
    expect(leftovers('bad.qcow2')).toEqual([]);
  });

  it('a corrupt compressed cluster: an existing output file is left untouched', () => {
    const img = corruptCompressedImage('bad.qcow2');
    const out = path.join(dir, 'out.raw');
    fs.writeFileSync(out, 'precious data that must survive a failed convert\n');
    const before = sha(out);
    const r = cli('convert', img, out, '-q');
    expect(r.code).toBe(1);
    expect(sha(out)).toBe(before);
    expect(leftovers('bad.qcow2', 'out.raw')).toEqual([]);
  });

  // One window into 1 MiB; and 24 MiB (six 4 MiB windows, four converted at once) into 9 MiB,
  // where some windows' writes succeed and one fails while others are still in flight.
  for (const [label, dataMiB, fsMiB] of [
    ['on a full file system', 4, 1],
    ['while several windows are written at once', 24, 9],
  ] as const) {
    it(`ENOSPC ${label}: one ENOSPC line, the partial output removed`, () => {
      expect(process.getuid?.(), `this test mounts a ${fsMiB} MiB tmpfs and must run as root (CI does)`).toBe(0);
      const img = path.join(dir, `in-${dataMiB}.raw`);
      fs.writeFileSync(img, Buffer.alloc(dataMiB << 20, 0x7e));
      const small = path.join(dir, `small-${fsMiB}`);
      fs.mkdirSync(small);
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${fsMiB}m`, 'tmpfs', small]);
      mounts.push(small);
      const r = cli('convert', img, path.join(small, 'out.raw'), '-q');
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/ENOSPC/);
      expect(r.err).toMatch(/removed partial output/);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(fs.readdirSync(small)).toEqual([]);
    });
  }

  it('SIGINT during a convert: exit 130, temporary file removed, no target, stderr says so', async () => {
    const img = path.join(dir, 'big.raw');
    const chunk = Buffer.alloc(8 << 20, 0x3c);
    const f = fs.openSync(img, 'w');
    for (let i = 0; i < 64; i++) fs.writeSync(f, chunk); // 512 MiB of data: no holes to skip
    fs.closeSync(f);
    const out = path.join(dir, 'out.raw');
    const child = spawn(process.execPath, [...CLI, 'convert', img, out, '-q'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let err = '';
    child.stderr!.on('data', (d) => {
      err += d;
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    // Wait for the output (temporary or not) to appear, then stop the child so it cannot finish first.
    let seen = false;
    for (let i = 0; i < 20000 && !seen && child.exitCode === null; i++) {
      seen = leftovers('big.raw').length > 0;
      if (!seen) await new Promise((r) => setTimeout(r, 1));
    }
    expect(seen, 'the convert never created its output').toBe(true);
    child.kill('SIGSTOP');
    child.kill('SIGINT');
    child.kill('SIGCONT');
    const { code, signal } = await exited;
    expect(signal).toBe(null);
    expect(code).toBe(130);
    expect(err).toMatch(/blocklayer convert: interrupted; removed partial output/);
    expect(fs.existsSync(out)).toBe(false);
    expect(leftovers('big.raw')).toEqual([]);
  });
});

describe('convert locks its output', () => {
  it('an output held by another process fails with ELOCKED and stays untouched', async () => {
    const img = path.join(dir, 'in.raw');
    fs.writeFileSync(img, Buffer.alloc(64 * 1024, 0x21));
    const out = path.join(dir, 'busy.raw');
    fs.writeFileSync(out, Buffer.alloc(64 * 1024, 0x99));
    const before = sha(out);
    await holdLock(out);
    const r = cli('convert', img, out, '-q');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ELOCKED/);
    expect(r.err).toContain(out);
    expect(sha(out)).toBe(before);
    expect(leftovers('in.raw', 'busy.raw')).toEqual([]);
  });
});

describe('-f/--format', () => {
  it('-f raw on a qcow2 file: info reports raw (no probing), the long spelling too', () => {
    const img = fixture('v3.qcow2', 'img.qcow2');
    const size = fs.statSync(img).size;
    for (const flag of [['-f', 'raw'], ['--format', 'raw'], ['--format=raw']]) {
      const r = cli('info', ...flag, img, '--json');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out)).toMatchObject({ format: 'raw', 'virtual-size': size });
    }
    expect(JSON.parse(cli('info', img, '--json').out)).toMatchObject({ format: 'qcow2', 'virtual-size': 65536 });
  });

  it('-f raw on a qcow2 file: map and convert see the file itself', () => {
    const img = fixture('v3.qcow2', 'img.qcow2');
    const size = fs.statSync(img).size;
    const m = cli('map', '-f', 'raw', img);
    expect(m.code).toBe(0);
    expect((JSON.parse(m.out) as { length: number }[]).reduce((n, e) => n + e.length, 0)).toBe(size);
    const out = path.join(dir, 'copy.raw');
    expect(cli('convert', '-f', 'raw', img, out, '-q').code).toBe(0);
    expect(sha(out)).toBe(sha(img));
  });

  it('-f with an unknown format: exit 1, one line naming -f, for info, map and convert', () => {
    const img = path.join(dir, 'img.raw');
    fs.writeFileSync(img, Buffer.alloc(4096));
    for (const args of [
      ['info', '-f', 'bogus', img],
      ['map', '--format', 'bogus', img],
      ['convert', '-f', 'bogus', img, path.join(dir, 'o.raw')],
    ]) {
      const r = cli(...args);
      expect(r.code).toBe(1);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.err).toMatch(/-f.*'bogus'/);
      expect(r.err).toMatch(/raw, qcow2/);
    }
    expect(fs.existsSync(path.join(dir, 'o.raw'))).toBe(false);
  });

  it('-f qcow2 on an rbd: target is refused by name, not silently ignored', () => {
    const r = cli('info', '-f', 'qcow2', 'rbd:pool/image');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/format 'qcow2' over rbd is not supported/);
  });
});
