import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CompareError, compareImages } from '../../src/index.js';
import { haveQemuTools, qemuImg, qemuIo, setQemuCwd } from '../helpers/qemu-images.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('compare tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const MAIN = path.join(import.meta.dirname, '../../src/cli/main.ts');
const MIB = 1024 * 1024;
let dir: string;
const p = (name: string) => path.join(dir, name);

/** Runs a program in the test directory: exit code and stdout. */
function run(cmd: string, args: string[], cwd = dir) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
// from the checkout (where tsx resolves), the images by their full names
const ours = (...args: string[]) =>
  run(process.execPath, [...CLI, 'compare', ...args.map((a) => (/\.(qcow2|raw)$/.test(a) ? p(a) : a))], path.dirname(path.dirname(path.dirname(MAIN))));
const theirs = (...args: string[]) => run('qemu-img', ['compare', ...args]);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-compare-'));
  setQemuCwd(dir);
  if (!available) return;
  const create = (name: string, size: string) => qemuImg('create', '-q', '-f', 'qcow2', name, size);
  create('a.qcow2', '4M');
  qemuIo('a.qcow2', ['write -P 1 0 1M', 'write -P 2 2M 64k']);
  qemuImg('convert', '-O', 'raw', 'a.qcow2', 'a.raw');
  qemuImg('convert', '-O', 'qcow2', '-o', 'cluster_size=4096', 'a.qcow2', 'a4k.qcow2');
  // one byte different in the middle (not on a sector boundary)
  fs.copyFileSync(p('a.qcow2'), p('mid.qcow2'));
  qemuIo('mid.qcow2', ['write -P 7 1500007 1']);
  // larger, with a zero tail (written zeros and a hole)
  create('big-zero.qcow2', '6M');
  qemuIo('big-zero.qcow2', ['write -P 1 0 1M', 'write -P 2 2M 64k', 'write -P 0 5M 64k']);
  // larger, with data in the tail
  fs.copyFileSync(p('big-zero.qcow2'), p('big-data.qcow2'));
  qemuIo('big-data.qcow2', ['write -P 3 5242887 1']);
  // the same content, allocated differently (zeros written over the hole at 1M; not an extent that reaches the end, see the EOF test)
  fs.copyFileSync(p('a.qcow2'), p('zeros.qcow2'));
  qemuIo('zeros.qcow2', ['write -P 0 1M 64k']);
  // sparse 64 GiB, identical but for one byte near the end
  create('s1.qcow2', '64G');
  create('s2.qcow2', '64G');
  qemuIo('s1.qcow2', ['write -P 5 1G 64k', 'write -P 6 60G 64k']);
  qemuIo('s2.qcow2', ['write -P 5 1G 64k', 'write -P 6 60G 64k']);
  fs.copyFileSync(p('s2.qcow2'), p('s3.qcow2'));
  qemuIo('s3.qcow2', [`write -P 9 ${64 * 1024 ** 3 - 700} 1`]);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Pairs run through both programs: [flags and the two images]. */
const PAIRS: [string, string[]][] = [
  ['identical (qcow2 vs its raw copy)', ['a.qcow2', 'a.raw']],
  ['identical, other cluster size', ['-f', 'qcow2', '-F', 'qcow2', 'a.qcow2', 'a4k.qcow2']],
  ['different in the middle', ['a.qcow2', 'mid.qcow2']],
  ['different in the middle, swapped', ['mid.qcow2', 'a.raw']],
  ['different sizes, zero tail', ['a.qcow2', 'big-zero.qcow2']],
  ['different sizes, zero tail, swapped', ['big-zero.qcow2', 'a.raw']],
  ['different sizes, data in the tail', ['a.qcow2', 'big-data.qcow2']],
  ['strict: sizes differ', ['-s', 'a.qcow2', 'big-zero.qcow2']],
  ['strict: identical images', ['-s', 'a.qcow2', 'a4k.qcow2']],
  ['strict: allocation differs', ['-s', 'a.qcow2', 'zeros.qcow2']],
  ['not strict: allocation differs, content the same', ['a.qcow2', 'zeros.qcow2']],
  ['raw vs qcow2, strict', ['-s', 'a.raw', 'a.qcow2']],
  ['sparse 64 GiB, identical', ['s1.qcow2', 's2.qcow2']],
  ['sparse 64 GiB, one byte near the end', ['s1.qcow2', 's3.qcow2']],
  ['quiet', ['-q', 'a.qcow2', 'mid.qcow2']],
  ['a missing image', ['a.qcow2', 'missing.qcow2']],
];

describe.skipIf(!available)('blocklayer compare against qemu-img compare', () => {
  it.each(PAIRS)('%s: the same message and exit code', (_name, args) => {
    const q = theirs(...args);
    const o = ours(...args);
    expect(o.code, o.err).toBe(q.code);
    if (q.code === 2) {
      expect(o.err).toMatch(/Could not open '.*missing\.qcow2'/);
      return;
    }
    expect(o.out).toBe(q.out);
  });

  it('a strict allocation difference at the first differing extent (qemu-img reports offset 0: its EOF flag)', () => {
    qemuImg('create', '-q', '-f', 'qcow2', 'e1.qcow2', '1M');
    qemuImg('create', '-q', '-f', 'qcow2', 'e2.qcow2', '1M');
    qemuIo('e2.qcow2', ['write -P 0 64k 64k']);
    expect(theirs('-s', 'e1.qcow2', 'e2.qcow2').out).toBe('Strict mode: Offset 0 block status mismatch!\n');
    const o = ours('-s', 'e1.qcow2', 'e2.qcow2');
    expect(o.code).toBe(1);
    expect(o.out).toBe('Strict mode: Offset 65536 block status mismatch!\n');
  });

  it('-p prints qemu-img progress lines, then the result', () => {
    const o = ours('-p', 'a.qcow2', 'a.raw');
    expect(o.code).toBe(0);
    expect(o.out).toMatch(/^ {4}\(0\.00\/100%\)\r.* {4}\(100\.00\/100%\)\r\nImages are identical\.\n$/s);
  });

  it('compare and rebase answer --help with their usage on stdout, and are in the top help', () => {
    for (const verb of ['compare', 'rebase']) {
      const r = run(process.execPath, [...CLI, verb, '--help'], path.dirname(path.dirname(path.dirname(MAIN))));
      expect([r.code, r.err]).toEqual([0, '']);
      expect(r.out).toMatch(new RegExp(`^usage: blocklayer ${verb} `));
    }
    const top = run(process.execPath, [...CLI, '--help'], path.dirname(path.dirname(path.dirname(MAIN))));
    expect(top.out).toContain('  blocklayer compare ');
    expect(top.out).toContain('  blocklayer rebase ');
  }, 60_000);

  it('a wrong argument count is a usage error (exit 1), as qemu-img', () => {
    expect(theirs('a.qcow2').code).toBe(1);
    const o = ours('a.qcow2');
    expect(o.code).toBe(1);
    expect(o.err).toContain('Expecting two image file names');
  });
});

describe.skipIf(!available)('compareImages', () => {
  it('reports the first differing sector, the reason and both sizes', async () => {
    expect(await compareImages(p('a.qcow2'), p('mid.qcow2'))).toEqual({ identical: false, firstDifference: 1499648, reason: 'content', sizes: [4 * MIB, 4 * MIB] });
    expect(await compareImages(p('a.qcow2'), p('big-zero.qcow2'))).toEqual({ identical: true, sizes: [4 * MIB, 6 * MIB] });
    expect(await compareImages(p('a.qcow2'), p('big-zero.qcow2'), { strict: true })).toEqual({ identical: false, reason: 'size', sizes: [4 * MIB, 6 * MIB] });
    expect(await compareImages(p('big-data.qcow2'), p('a.raw'))).toMatchObject({ identical: false, firstDifference: 5242880, reason: 'content' });
  });

  it('compares sparse 64 GiB images by block status, fast', async () => {
    let calls = 0;
    const t0 = performance.now();
    const r = await compareImages(p('s1.qcow2'), p('s3.qcow2'), { onProgress: () => calls++ });
    expect(r).toMatchObject({ identical: false, firstDifference: 64 * 1024 ** 3 - 1024 });
    expect(performance.now() - t0).toBeLessThan(20_000);
    expect(calls).toBeGreaterThan(0);
  });

  it('an image that does not open is a CompareError of stage open; an aborted signal rejects with ECANCELED', async () => {
    const e = await compareImages(p('a.qcow2'), p('missing.qcow2')).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CompareError);
    expect((e as CompareError).stage).toBe('open');
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(compareImages(p('s1.qcow2'), p('s2.qcow2'), { signal: ac.signal })).rejects.toMatchObject({ code: 'ECANCELED' });
  });

  it('stops when the signal aborts midway', async () => {
    const ac = new AbortController();
    const r = compareImages(p('s1.qcow2'), p('s2.qcow2'), { signal: ac.signal, onProgress: (done) => done > 1024 ** 3 && ac.abort(new Error('enough')) });
    await expect(r).rejects.toMatchObject({ code: 'ECANCELED' });
  });
});
