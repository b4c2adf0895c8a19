/**
 * The npm package installs anywhere: packed as `npm pack` packs it, installed into a fresh project
 * with install scripts off and no C compiler (so fs-ext and zstd-napi stay unbuilt), and used there
 * for memory and file drives, QEMU locks, block status, zstd reads and a zstd write refused by name;
 * then every entry point from ESM and from CommonJS `require()`, and the README's snippets and the
 * v86 adapter's typing under `tsc --strict` with moduleResolution node16, bundler and node10.
 *
 * CommonJS: the code stays ES modules only and Node ^20.19 / >=22.12 `require()`s them (no module in
 * the graph uses top-level await) through a small `.cjs` entry per export that, on an older Node,
 * says which Node it needs. One copy of the code serves both module systems: no second build, and
 * no dual-package hazard (a BlockError from `require()` is the class `import` gives). TypeScript
 * under `module: node16` refuses a CommonJS file importing ESM declarations, so the `require`
 * condition carries `.d.cts` twins of them (scripts/build-cjs-entries.ts); node10 finds the
 * subpaths through `typesVersions`.
 *
 * Needs the npm registry for the dependencies: skipped with a printed reason when `npm ping` fails.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildBrowser } from '../../scripts/build-browser.js';
import { buildCjsEntries } from '../../scripts/build-cjs-entries.js';
import { buildCli } from '../../scripts/build-cli.js';
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

/** Where `name` is on this process's PATH. */
function findOnPath(name: string): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, name);
    if (dir !== '' && fs.existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} is not on PATH`);
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

/** Every entry point from CommonJS: `require()` of the ES module, one copy shared with `import()`. */
const CJS_CONSUMER = `
'use strict';
const assert = require('node:assert/strict');
const { BlockError, BlockLayer } = require('blocklayer');
const { V86Disk, toV86Disk } = require('blocklayer/v86');

(async () => {
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ id: 'mem', driver: 'memory', size: '1M' });
  await drive.write(0, Buffer.alloc(512, 7));
  const disk = toV86Disk(drive);
  assert.equal(disk.byteLength, 1 << 20);
  const sector = await new Promise((resolve) => disk.get(0, 512, resolve));
  assert.ok(sector.every((b) => b === 7), 'the v86 disk reads the drive');
  await assert.rejects(drive.read(1 << 20, 512), (e) => e instanceof BlockError && e.code === 'EINVAL');
  // One copy of the package: import() hands out the very classes require() did.
  assert.equal((await import('blocklayer')).BlockError, BlockError);
  assert.equal((await import('blocklayer/v86')).V86Disk, V86Disk);
  // The file-disk subpath resolves; running it needs its peer, file-disk, which is not installed here.
  assert.match(require.resolve('blocklayer/file-disk'), /dist[\\\\/]adapters[\\\\/]file-disk\\.cjs$/);
  assert.throws(() => require('blocklayer/file-disk'), /file-disk/);
  await layer.close();
  console.log('OK');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
`;

/** The subpaths from ESM (check.mjs covers the main entry). */
const ESM_SUBPATHS = `
import assert from 'node:assert/strict';
import { BlockLayer } from 'blocklayer';
import { toV86Disk } from 'blocklayer/v86';

const layer = new BlockLayer();
const disk = toV86Disk(await layer.openDrive({ id: 'mem', driver: 'memory', size: '64K' }));
assert.equal(disk.byteLength, 65536);
assert.match(import.meta.resolve('blocklayer/file-disk'), /dist\\/adapters\\/file-disk\\.js$/);
await assert.rejects(import('blocklayer/file-disk'), /file-disk/);
await layer.close();
console.log('OK');
`;

/** The first ```ts block of a document (README.md, docs/…) after a heading matching `heading` and containing `mark`: its imports and the rest. */
function readmeSnippet(heading: RegExp, mark: string, file = 'README.md'): { imports: string[]; body: string[] } {
  const readme = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const from = readme.search(heading);
  expect(from, `${file} has a heading matching ${heading}`).toBeGreaterThanOrEqual(0);
  const block = [...readme.slice(from).matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]).find((code) => code.includes(mark));
  expect(block, `${file} has a ts snippet with ${mark} after ${heading}`).toBeDefined();
  const lines = (block as string).split('\n');
  return { imports: lines.filter((l) => l.startsWith('import ')), body: lines.filter((l) => !l.startsWith('import ')) };
}

/**
 * A TypeScript consumer: the README's quick start (and, in ESM syntax, its v86 snippet), each in an
 * async function (CommonJS has no top-level await), and the v86 adapter's disk in v86's own option
 * types. `commonJs` imports v86's types with `resolution-mode: import`: v86 is ESM only.
 */
function typedConsumer(commonJs: boolean): string {
  const quickStart = readmeSnippet(/^#+ Quick start/im, "from 'blocklayer'");
  const v86 = readmeSnippet(/^#+ v86/im, "from 'blocklayer/v86'", 'docs/embedding.md');
  const imports = new Set([...quickStart.imports, ...(commonJs ? [] : v86.imports)]);
  return [
    ...imports,
    "import type { Drive as PublicDrive } from 'blocklayer';",
    "import type { DriveDisk as PublicDriveDisk } from 'blocklayer/file-disk';",
    "import { toV86Disk as publicToV86Disk, type V86Disk as PublicV86Disk } from 'blocklayer/v86';",
    commonJs
      ? "import type { V86Options as PublicV86Options } from 'v86' with { 'resolution-mode': 'import' };"
      : "import type { V86Options as PublicV86Options } from 'v86';",
    '',
    'export async function quickStart(): Promise<void> {',
    ...quickStart.body,
    '}',
    '',
    ...(commonJs ? [] : ['export async function v86Snippet(): Promise<void> {', ...v86.body, '}', '']),
    'export function v86Options(drive: PublicDrive, cdrom: PublicV86Disk): PublicV86Options {',
    '  const hda = publicToV86Disk(drive);',
    "  return { bios: { url: 'bios.bin' }, hda, cdrom, fda: cdrom, autostart: false };",
    '}',
    '',
    'export const fileDiskLength = (disk: PublicDriveDisk): number => disk.drive.length;',
    '',
  ].join('\n');
}

/**
 * tsc configurations a consumer may have, and the consumer files each checks. node16 also checks the
 * declaration files (ours, `.d.ts` and `.d.cts`, and those they import): once is enough, and it is
 * most of the time a run takes.
 */
const TSC_MATRIX: { module: string; moduleResolution: string; files: string[]; skipLibCheck: boolean }[] = [
  { module: 'node16', moduleResolution: 'node16', files: ['typed.ts', 'typed.cts'], skipLibCheck: false },
  { module: 'preserve', moduleResolution: 'bundler', files: ['typed.ts'], skipLibCheck: true },
  { module: 'commonjs', moduleResolution: 'node10', files: ['typed.ts'], skipLibCheck: true },
];

describe.skipIf(skipReason !== undefined)('the npm package', () => {
  const consumer = path.join(tmp, 'consumer');
  const modules = path.join(consumer, 'node_modules');
  let files: string[] = [];
  let seconds = 0;
  let bytes = 0;

  beforeAll(async () => {
    // Stage what `npm pack` runs `prepare` for (npm run build) without touching the working tree's dist/.
    const stage = path.join(tmp, 'stage');
    fs.mkdirSync(stage);
    for (const f of ['package.json', 'README.md', 'LICENSE']) fs.copyFileSync(path.join(ROOT, f), path.join(stage, f));
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    run(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', path.join(stage, 'dist')], ROOT);
    buildCjsEntries(path.join(stage, 'dist'));
    await buildBrowser(path.join(stage, 'dist/browser'));
    await buildCli(path.join(stage, 'dist/cli'));

    const packed = JSON.parse(run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], stage)) as { filename: string; files: { path: string }[] }[];
    const tarball = path.join(tmp, packed[0].filename);
    files = packed[0].files.map((f) => f.path);

    fs.mkdirSync(consumer);
    fs.writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    // No install scripts (so node-gyp never runs), no source builds, and a PATH with node, npm and sh
    // only: no cc, gcc, g++ or make to find.
    const bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin);
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    fs.symlinkSync(fs.realpathSync(findOnPath('npm')), path.join(bin, 'npm'));
    fs.symlinkSync(findOnPath('sh'), path.join(bin, 'sh'));
    const env = { ...process.env, PATH: bin, CC: '/bin/false', CXX: '/bin/false', npm_config_ignore_scripts: 'true', npm_config_build_from_source: 'false' };
    for (const compiler of ['cc', 'gcc', 'g++', 'make']) expect(spawnSync(compiler, ['--version'], { env }).error, `${compiler} is hidden`).toBeDefined();
    const started = performance.now();
    run(npm, ['install', '--ignore-scripts', '--no-audit', '--no-fund', tarball], consumer, env);
    seconds = (performance.now() - started) / 1000;
    bytes = diskUsage(modules);
  }, 180_000);

  it('packs, installs without install scripts or a C compiler, and serves memory, file and qcow2 drives', { timeout: 180_000 }, async () => {
    expect(files).toContain('LICENSE');
    expect(files).toContain('dist/index.js');
    expect(files).toContain('dist/index.d.ts');
    expect(files).toContain('dist/browser/blocklayer.js');
    for (const entry of ['index', 'adapters/v86', 'adapters/file-disk']) {
      expect(files).toContain(`dist/${entry}.cjs`);
      expect(files).toContain(`dist/${entry}.d.cts`);
    }
    // No maps (the browser bundle's, sources and all, stay in the repository's build: 2.4 MB), no browser twins, no sources.
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    expect(files.filter((f) => f.endsWith('.browser.js') || f.startsWith('src/'))).toEqual([]);

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

    // The CLI runs too, as npm installed it (package.json's bin: the bundled command).
    const info = run(process.execPath, [path.join(modules, '.bin/blocklayer'), 'info', 'zstd.qcow2'], consumer);
    expect(info).toContain('zstd');
    const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(run(process.execPath, [path.join(modules, '.bin/blocklayer'), '--version'], consumer).trim()).toBe(`blocklayer version ${version}`);

    expect(bytes).toBeLessThan(MAX_INSTALLED_BYTES);
  });

  it('loads every entry point from ESM and from CommonJS require()', () => {
    fs.writeFileSync(path.join(consumer, 'subpaths.mjs'), ESM_SUBPATHS);
    expect(run(process.execPath, ['subpaths.mjs'], consumer).trim()).toBe('OK');
    // A Node whose require() cannot load ES modules (before 20.19 / 22.12, or told not to) is told which Node it needs.
    const canRequireEsm = process.features.require_module === true;
    const refusal = canRequireEsm ? ['--no-experimental-require-module'] : [];
    const refused = spawnSync(process.execPath, [...refusal, '-e', "require('blocklayer')"], { cwd: consumer, encoding: 'utf8', timeout: 60_000 });
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toContain('blocklayer is ES modules only: require() of it needs a Node whose require() loads ES modules, ^20.19 or >=22.12');
    if (!canRequireEsm) {
      console.log(`package-install: Node ${process.version} cannot require() ES modules; checked the refusal only`);
      return;
    }
    fs.writeFileSync(path.join(consumer, 'require.cjs'), CJS_CONSUMER);
    const r = spawnSync(process.execPath, ['require.cjs'], { cwd: consumer, encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('OK');
  });

  it('type-checks the README snippets and the v86 adapter under node16, bundler and node10', { timeout: 240_000 }, () => {
    // The optional peers as a TypeScript user who installed them has them: v86's and file-disk's typings.
    fs.mkdirSync(path.join(modules, 'v86'));
    for (const f of ['package.json', 'v86.d.ts']) fs.copyFileSync(path.join(ROOT, 'node_modules/v86', f), path.join(modules, 'v86', f));
    fs.cpSync(path.join(ROOT, 'node_modules/file-disk'), path.join(modules, 'file-disk'), { recursive: true, filter: (f) => !f.endsWith('.js') && !f.endsWith('.map') });
    fs.writeFileSync(path.join(consumer, 'typed.ts'), typedConsumer(false));
    fs.writeFileSync(path.join(consumer, 'typed.cts'), typedConsumer(true));
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    for (const { module, moduleResolution, files: checked, skipLibCheck } of TSC_MATRIX) {
      const config = `tsconfig.${moduleResolution}.json`;
      const compilerOptions = {
        strict: true,
        noEmit: true,
        target: 'es2022',
        lib: ['es2022', 'dom'], // v86's typings name DOM types
        module,
        moduleResolution,
        esModuleInterop: true,
        skipLibCheck,
        typeRoots: [path.join(ROOT, 'node_modules/@types')],
        types: ['node'],
      };
      fs.writeFileSync(path.join(consumer, config), JSON.stringify({ compilerOptions, files: checked }, null, 2));
      const r = spawnSync(process.execPath, [tsc, '-p', config], { cwd: consumer, encoding: 'utf8', timeout: 120_000 });
      expect(`${r.stdout}${r.stderr}`, `tsc -p ${config}`).toBe('');
      expect(r.status, `tsc -p ${config}`).toBe(0);
    }
  });
});
