/**
 * The npm package installs anywhere: packed as `npm pack` packs it, installed into a fresh project
 * with install scripts off and no C compiler (so fs-ext and zstd-napi stay unbuilt), and used there
 * for memory and file drives, QEMU locks, block status, zstd reads and a zstd write refused by name.
 * Needs the npm registry for the dependencies: skipped with a printed reason when `npm ping` fails.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildBrowser } from '../../scripts/build-browser.js';
import { seek } from '../../src/drivers/file/posix.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const FIXTURES = path.join(ROOT, 'tests/fixtures/qcow2');
/** Most the consumer's node_modules may take on disk. */
const MAX_INSTALLED_BYTES = 30 * 1024 * 1024;

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function registryUnreachable(): string | undefined {
  const r = spawnSync(npm, ['ping'], { encoding: 'utf8', timeout: 20_000 });
  if (r.error) return `npm ping: ${r.error.message}`;
  if (r.status !== 0) return `npm ping failed: ${(r.stderr || r.stdout).trim().split('\n').pop()}`;
  return undefined;
}

const skipReason = registryUnreachable();
if (skipReason) console.log(`package-install: skipped, the npm registry is not reachable (${skipReason})`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-pkg-'));
afterAll(() => {
  if (!process.env.BLOCKLAYER_KEEP_PKG_TMP) fs.rmSync(tmp, { recursive: true, force: true });
});

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Disk usage of a tree as du counts it (allocated blocks), without following symlinks. */
function diskUsage(dir: string): number {
  let bytes = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    const st = fs.lstatSync(p);
    bytes += st.blocks * 512;
    if (entry.isDirectory()) bytes += diskUsage(p);
  }
  return bytes;
}

/** Whether this file system reports a hole in `file` (SEEK_HOLE before its end), asked from this process. */
async function fileHasHole(file: string): Promise<boolean> {
  const fd = fs.openSync(file, 'r');
  try {
    return (await seek(fd, 0, 'hole')) < fs.fstatSync(fd).size;
  } catch {
    return false;
  } finally {
    fs.closeSync(fd);
  }
}

/** What the consumer runs: the public API only, as a user of memory, file and qcow2 drives would. */
const CONSUMER = `
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { BlockError, BlockLayer, createImage } from 'blocklayer';

const layer = new BlockLayer();

// A memory drive under an IOPS limit.
const mem = await layer.openDrive({ id: 'mem', driver: 'memory', size: '1M', throttle: { iopsTotal: 1000 } });
await mem.write(4096, Buffer.alloc(4096, 0xab));
const back = Buffer.alloc(4096);
await mem.read(4096, back);
assert.ok(back.every((b) => b === 0xab), 'memory drive reads back what was written');
console.log('memory OK');

// A raw drive on a sparse file: size by SEEK_END, QEMU locks, block status by SEEK_DATA/SEEK_HOLE.
fs.writeFileSync('disk.raw', '');
fs.truncateSync('disk.raw', 1024 * 1024);
const disk = await layer.openDrive({ id: 'disk', driver: 'raw', file: { driver: 'file', filename: 'disk.raw' } });
assert.equal(disk.length, 1024 * 1024);
await disk.write(0, Buffer.alloc(65536, 0xcd));
await disk.flush();
const got = Buffer.alloc(65536);
await disk.read(0, got);
assert.ok(got.every((b) => b === 0xcd), 'file drive reads back what was written');
await assert.rejects(
  layer.openDrive({ id: 'again', driver: 'raw', file: { driver: 'file', filename: 'disk.raw' } }),
  (e) => e instanceof BlockError && e.code === 'ELOCKED',
  'a second read-write open of a locked image is refused',
);
const map = await disk.blockStatusMap();
const holes = map.filter((e) => !e.data).reduce((n, e) => n + e.length, 0);
console.log('file block status: ' + map.length + ' extents, ' + holes + ' bytes of holes');
console.log('file OK');

// zstd-compressed qcow2 clusters read through fzstd; writing them needs zstd-napi, which did not build.
const zstd = await layer.openDrive({ id: 'zstd', driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: 'zstd.qcow2' } });
const all = Buffer.alloc(zstd.length);
await zstd.read(0, all);
assert.equal(crypto.createHash('sha256').update(all).digest('hex'), process.argv[2], 'zstd.qcow2 reads as qemu-img reads it');
console.log('zstd read OK');
await createImage('z.qcow2', { format: 'qcow2', size: '1M', compressionType: 'zstd' });
const z = await layer.openDrive({ id: 'z', driver: 'qcow2', file: { driver: 'file', filename: 'z.qcow2' } });
await assert.rejects(
  z.node.writeCompressed(0, Buffer.alloc(65536, 1)),
  (e) => e instanceof BlockError && e.code === 'ENOTSUP' && e.message.includes('zstd-napi'),
  'a zstd write without zstd-napi is ENOTSUP naming the package',
);
console.log('zstd write refused OK');

await layer.close();
console.log('OK');
`;

describe.skipIf(skipReason !== undefined)('the npm package', () => {
  it('packs, installs without install scripts or a C compiler, and serves memory, file and qcow2 drives', { timeout: 180_000 }, async () => {
    // Stage what `npm pack` runs `prepare` for (npm run build) without touching the working tree's dist/.
    const stage = path.join(tmp, 'stage');
    fs.mkdirSync(stage);
    for (const f of ['package.json', 'README.md', 'LICENSE']) fs.copyFileSync(path.join(ROOT, f), path.join(stage, f));
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    run(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', path.join(stage, 'dist')], ROOT);
    await buildBrowser(path.join(stage, 'dist/browser'));

    const packed = JSON.parse(run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], stage)) as { filename: string; files: { path: string }[] }[];
    const tarball = path.join(tmp, packed[0].filename);
    const files = packed[0].files.map((f) => f.path);
    expect(files).toContain('LICENSE');
    expect(files).toContain('dist/index.js');
    expect(files).toContain('dist/index.d.ts');
    expect(files).toContain('dist/browser/blocklayer.js');
    // No maps pointing at the unshipped src/ (the browser bundle's maps carry their sources), no browser twins, no sources.
    expect(files.filter((f) => f.endsWith('.map') && !f.startsWith('dist/browser/'))).toEqual([]);
    expect(files.filter((f) => f.endsWith('.browser.js') || f.startsWith('src/'))).toEqual([]);

    const consumer = path.join(tmp, 'consumer');
    fs.mkdirSync(consumer);
    fs.writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    // --ignore-scripts already keeps node-gyp from running; no compiler and no source builds make sure.
    const env = { ...process.env, CC: '/bin/false', CXX: '/bin/false', npm_config_build_from_source: 'false' };
    const started = performance.now();
    run(npm, ['install', '--ignore-scripts', '--no-audit', '--no-fund', tarball], consumer, env);
    const seconds = (performance.now() - started) / 1000;
    const modules = path.join(consumer, 'node_modules');
    const bytes = diskUsage(modules);
    console.log(`package-install: npm install took ${seconds.toFixed(1)} s; node_modules holds ${(bytes / 2 ** 20).toFixed(1)} MiB`);

    // The optional native addons came without their binaries: the code below runs without them.
    expect(fs.existsSync(path.join(modules, 'fs-ext/build'))).toBe(false);
    expect(fs.existsSync(path.join(modules, 'zstd-napi/build'))).toBe(false);
    const installed = JSON.parse(fs.readFileSync(path.join(modules, 'blocklayer/package.json'), 'utf8')) as Record<string, Record<string, string>>;
    expect(Object.keys(installed.dependencies).sort()).toEqual(['cli-progress', 'eventemitter3', 'fzstd', 'koffi', 'zod']);
    expect(Object.keys(installed.optionalDependencies).sort()).toEqual(['fs-ext', 'zstd-napi']);
    // (buffer still comes, deep under zstd-napi's prebuild-install.)
    for (const devOnly of ['v86', 'ext2fs', 'file-disk', 'fflate', '@types/cli-progress']) {
      expect(fs.existsSync(path.join(modules, devOnly)), `${devOnly} is not installed for users`).toBe(false);
    }

    fs.copyFileSync(path.join(FIXTURES, 'zstd.qcow2'), path.join(consumer, 'zstd.qcow2'));
    fs.writeFileSync(path.join(consumer, 'check.mjs'), CONSUMER);
    const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8')) as Record<string, string>;
    const out = run(process.execPath, ['check.mjs', expected['zstd.qcow2']], consumer);
    console.log(out.trim());
    // SEEK_HOLE answered in the consumer (through koffi: fs-ext has no binary there) wherever it does here.
    const holesHere = await fileHasHole(path.join(consumer, 'disk.raw'));
    expect(out).toMatch(holesHere ? /^file block status: \d+ extents, [1-9]\d* bytes of holes$/m : /^file block status: /m);
    expect(out.trim().split('\n').pop()).toBe('OK');

    // The CLI runs too.
    const info = run(process.execPath, [path.join(modules, 'blocklayer/dist/cli/main.js'), 'info', 'zstd.qcow2'], consumer);
    expect(info).toContain('zstd');

    expect(bytes).toBeLessThan(MAX_INSTALLED_BYTES);
  });
});
