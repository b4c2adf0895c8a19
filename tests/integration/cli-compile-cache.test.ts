// The built command (scripts/build-cli.ts) and its code cache (scripts/cli-launcher.ts): what it
// prints with a cache, without one, with a broken one, is what qemu-img says of the same image.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCli } from '../../scripts/build-cli.js';
import { haveProgram } from '../helpers/tools.js';

const skip = !haveProgram('qemu-img');
if (skip) console.log('cli compile-cache tests skipped: qemu-img not installed (apt-get install qemu-utils)');

// two levels under the package, as dist/cli/, so that the command finds package.json and node_modules
const outdir = path.join(import.meta.dirname, '../../dist', `.cli-cache-test-${process.pid}`);
let tmp = '';
let bin = '';
let esm = '';
let image = '';

/** Runs the built command with `env` added; its exit code and output. */
function blocklayer(env: Record<string, string>, ...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The cache files in `dir` (none when it does not exist). */
function cacheFiles(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

/** What qemu-img and we must agree on in `info --output=json`. */
function essentials(json: string) {
  const info = JSON.parse(json) as Record<string, unknown>;
  return { format: info.format, 'virtual-size': info['virtual-size'], 'cluster-size': info['cluster-size'], filename: info.filename };
}

beforeAll(async () => {
  if (skip) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-cli-cache-'));
  [bin, esm] = await buildCli(outdir);
  image = path.join(tmp, 'small.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
}, 120_000);

afterAll(() => {
  fs.rmSync(outdir, { recursive: true, force: true });
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(skip)('the built blocklayer command and its code cache', () => {
  it('package.json names the CommonJS launcher as the bin, and both launchers run the same command', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, '../../package.json'), 'utf8')) as { bin: Record<string, string>; version: string };
    expect(path.basename(pkg.bin.blocklayer)).toBe(path.basename(bin));
    const off = { BLOCKLAYER_COMPILE_CACHE: 'off' };
    expect(blocklayer(off, '--version').out.trim()).toBe(`blocklayer version ${pkg.version}`);
    const r = spawnSync(process.execPath, [esm, '--version'], { encoding: 'utf8', env: { ...process.env, ...off } });
    expect(r.stdout.trim()).toBe(`blocklayer version ${pkg.version}`);
  });

  it('writes a cache on the first run, reads it on the next without writing it again, and prints what qemu-img prints', () => {
    const dir = path.join(tmp, 'cache-1');
    const env = { BLOCKLAYER_COMPILE_CACHE: dir };
    const expected = essentials(execFileSync('qemu-img', ['info', '--output=json', image], { encoding: 'utf8' }));
    const first = blocklayer(env, 'info', '--output=json', image);
    expect(first.code, first.err).toBe(0);
    expect(essentials(first.out)).toEqual(expected);
    const files = cacheFiles(dir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(new RegExp(`^[0-9a-f]{16}-info-${process.version.replace(/\./g, '\\.')}-${process.arch}\\.bin$`));
    const written = fs.statSync(path.join(dir, files[0]));
    expect(written.size).toBeGreaterThan(0);
    if (process.getuid) expect(fs.statSync(dir).mode & 0o777).toBe(0o700);

    const second = blocklayer(env, 'info', '--output=json', image);
    expect(second.code, second.err).toBe(0);
    expect(second.out).toBe(first.out);
    // accepted, so not written again (a rewrite renames a new file over it: a new inode)
    const after = fs.statSync(path.join(dir, files[0]));
    expect(after.ino).toBe(written.ino);
    expect(after.mtimeMs).toBe(written.mtimeMs);

    // another verb keeps a cache of its own
    expect(blocklayer(env, 'check', image).code).toBe(0);
    expect(cacheFiles(dir).map((f) => f.split('-')[1])).toEqual(['check', 'info']);
  });

  it('starts the image verbs from their own smaller script and everything else from the whole command', () => {
    const off = { BLOCKLAYER_COMPILE_CACHE: 'off' };
    const imageScript = path.join(outdir, 'blocklayer-image-script.js');
    const whole = path.join(outdir, 'blocklayer-script.js');
    expect(fs.statSync(imageScript).size).toBeLessThan(fs.statSync(whole).size);
    const held = `${imageScript}.held`;
    fs.renameSync(imageScript, held);
    try {
      // without the image script the image verbs cannot start; the others (and help, --version) do not miss it
      for (const verb of ['info', 'map', 'check', 'convert', 'create', 'bitmap', 'resize', 'snapshot', 'compare', 'rebase']) {
        const r = blocklayer(off, verb, '--help');
        expect(r.code, verb).not.toBe(0);
        expect(r.err, verb).toContain('blocklayer-image-script.js');
      }
      for (const args of [['serve', '--help'], ['commit', '--help'], ['--help'], ['--version']]) expect(blocklayer(off, ...args).code, args.join(' ')).toBe(0);
    } finally {
      fs.renameSync(held, imageScript);
    }
    const r = blocklayer(off, 'info', '--help');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^usage: blocklayer info /);
  });

  it('runs as without a cache when the cache is garbage, then writes a good one', () => {
    const dir = path.join(tmp, 'cache-2');
    const env = { BLOCKLAYER_COMPILE_CACHE: dir };
    const clean = blocklayer(env, 'info', image);
    const [file] = cacheFiles(dir);
    const garbage = Buffer.alloc(4096, 0x5a);
    fs.writeFileSync(path.join(dir, file), garbage);
    const r = blocklayer(env, 'info', image);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(clean.out);
    expect(fs.readFileSync(path.join(dir, file)).equals(garbage)).toBe(false);
  });

  it.skipIf(!process.getuid)('uses no cache directory that others may write into', () => {
    const dir = path.join(tmp, 'cache-3');
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o777);
    const r = blocklayer({ BLOCKLAYER_COMPILE_CACHE: dir }, 'info', image);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('virtual size: 64 MiB (67108864 bytes)');
    expect(cacheFiles(dir)).toEqual([]);
  });

  it('keeps its cache under TMPDIR by default, and none with BLOCKLAYER_COMPILE_CACHE=off', () => {
    const home = path.join(tmp, 'tmpdir');
    fs.mkdirSync(home);
    const dir = path.join(home, `blocklayer-compile-cache-${process.getuid?.() ?? 'user'}`);
    const off = blocklayer({ TMPDIR: home, BLOCKLAYER_COMPILE_CACHE: 'off' }, 'info', image);
    expect(off.code, off.err).toBe(0);
    expect(fs.existsSync(dir)).toBe(false);
    const r = blocklayer({ TMPDIR: home, BLOCKLAYER_COMPILE_CACHE: '' }, 'info', image);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(off.out);
    expect(cacheFiles(dir)).toHaveLength(1);
  });
});
