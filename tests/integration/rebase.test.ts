import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, compareImages, openImage, rebaseImage } from '../../src/index.js';
import { haveQemuTools, qemuImg, qemuIo, setQemuCwd } from '../helpers/qemu-images.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('rebase tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const MAIN = path.join(import.meta.dirname, '../../src/cli/main.ts');
const ROOT = path.dirname(path.dirname(path.dirname(MAIN)));
const KIB = 1024;
const MIB = 1024 * KIB;
let dir: string;
const p = (name: string) => path.join(dir, name);

/** `blocklayer rebase …` run from the checkout (where tsx resolves); images by their full names. */
function ours(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, 'rebase', ...args], { encoding: 'utf8', cwd: ROOT });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const info = (image: string) => JSON.parse(qemuImg('info', '--output=json', image)) as Record<string, unknown>;
const checkClean = (image: string) => expect(qemuImg('check', image)).toContain('No errors were found on the image.');
const create = (name: string, size: string, ...o: string[]) => qemuImg('create', '-q', '-f', 'qcow2', ...o, name, size);

/** base (4 MiB) ← mid ← top, each with its own data, zeros and holes; and the raw guest view of top. */
function chain(prefix: string): { base: string; mid: string; top: string; raw: string } {
  const base = `${prefix}-base.qcow2`;
  const mid = `${prefix}-mid.qcow2`;
  const top = `${prefix}-top.qcow2`;
  create(base, '4M');
  qemuIo(base, ['write -P 1 0 1M', 'write -P 9 3M 64k', 'write -P 4 2M 4k']);
  create(mid, '4M', '-b', base, '-F', 'qcow2');
  qemuIo(mid, ['write -P 2 512k 1M', 'write -z 3M 4k', 'write -P 5 2052k 1k']);
  create(top, '4M', '-b', mid, '-F', 'qcow2');
  qemuIo(top, ['write -P 3 1M 100k', 'write -P 6 1536k 7']);
  const raw = `${prefix}-view.raw`;
  qemuImg('convert', '-O', 'raw', top, raw);
  return { base, mid, top, raw };
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-rebase-'));
  setQemuCwd(dir);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!available)('rebaseImage, checked with qemu-img', () => {
  it('safe rebase of a three-layer chain onto its base: the guest view is unchanged, the image clean, the header new', async () => {
    const c = chain('safe');
    const r = await rebaseImage(p(c.top), c.base, { backingFormat: 'qcow2' });
    expect(r.backingFile).toBe(c.base);
    expect(r.bytes).toBeGreaterThan(0);
    expect(info(c.top)).toMatchObject({ 'backing-filename': c.base, 'backing-filename-format': 'qcow2' });
    checkClean(c.top);
    expect(qemuImg('compare', c.top, c.raw)).toContain('Images are identical.');
    // only what the old chain held differently was copied: mid's 1 MiB, its zeros, its 1 KiB (within their clusters)
    expect(r.bytes).toBeLessThan(1.2 * MIB);
  });

  it('matches qemu-img rebase on the same chain: the same guest view and the same header', async () => {
    const c = chain('both');
    const copy = 'both-top-q.qcow2';
    fs.copyFileSync(p(c.top), p(copy));
    qemuImg('rebase', '-b', c.base, '-F', 'qcow2', copy);
    await rebaseImage(p(c.top), c.base, { backingFormat: 'qcow2' });
    expect(qemuImg('compare', c.top, copy)).toContain('Images are identical.');
    const header = (f: string) => fs.readFileSync(p(f)).subarray(0, 512);
    // the header fields that say where the tables are may differ: the backing file part must not
    expect(header(c.top).subarray(104)).toEqual(header(copy).subarray(104));
    expect(header(c.top).subarray(8, 20)).toEqual(header(copy).subarray(8, 20));
  });

  it('-b "" in safe mode copies everything the old chain held: the image stands alone', async () => {
    const c = chain('flat');
    await rebaseImage(p(c.top), null);
    const i = info(c.top);
    expect(i['backing-filename']).toBeUndefined();
    checkClean(c.top);
    expect(qemuImg('compare', c.top, c.raw)).toContain('Images are identical.');
  });

  it('a standalone image rebased safely onto a backing file: its unallocated ranges are written as zeros where the new file has data', async () => {
    create('alone.qcow2', '4M');
    qemuIo('alone.qcow2', ['write -P 8 100k 10k']);
    qemuImg('convert', '-O', 'raw', 'alone.qcow2', 'alone.raw');
    const c = chain('alone');
    const r = await rebaseImage(p('alone.qcow2'), c.base, { backingFormat: 'qcow2' });
    expect(r.bytes).toBeGreaterThan(0);
    expect(info('alone.qcow2')['backing-filename']).toBe(c.base);
    checkClean('alone.qcow2');
    expect(qemuImg('compare', 'alone.qcow2', 'alone.raw')).toContain('Images are identical.');
  });

  it('onto a smaller raw backing file: the part past its end is copied from the old chain', async () => {
    const c = chain('small');
    fs.writeFileSync(p('small.raw'), Buffer.alloc(MIB, 0x11));
    await rebaseImage(p(c.top), 'small.raw', { backingFormat: 'raw' });
    expect(info(c.top)).toMatchObject({ 'backing-filename': 'small.raw', 'backing-filename-format': 'raw' });
    checkClean(c.top);
    expect(qemuImg('compare', c.top, c.raw)).toContain('Images are identical.');
  });

  it('unsafe rebase changes the header only', async () => {
    const c = chain('unsafe');
    const before = fs.readFileSync(p(c.top));
    await rebaseImage(p(c.top), 'elsewhere.qcow2', { backingFormat: 'qcow2', unsafe: true });
    const after = fs.readFileSync(p(c.top));
    // the clusters after the header are untouched
    expect(after.length).toBe(before.length);
    expect(after.subarray(65536).equals(before.subarray(65536))).toBe(true);
    expect(info(c.top)).toMatchObject({ 'backing-filename': 'elsewhere.qcow2', 'backing-filename-format': 'qcow2' });
    // back to the real base, unsafely: the guest view is then base's under top, as the header says
    await rebaseImage(p(c.top), c.mid, { backingFormat: 'qcow2', unsafe: true });
    expect(info(c.top)).toMatchObject({ 'backing-filename': c.mid, 'backing-filename-format': 'qcow2' });
    checkClean(c.top);
    expect(qemuImg('compare', c.top, c.raw)).toContain('Images are identical.');
  });

  it.each([
    ['compat 1.1', ['-o', 'compat=1.1']],
    ['compat 0.10', ['-o', 'compat=0.10']],
    ['4 KiB clusters (no feature table)', ['-o', 'cluster_size=4096']],
    ['512-byte clusters', ['-o', 'cluster_size=512']],
  ])('unsafe rebase writes the header cluster qemu-img rebase -u writes (%s), for longer, shorter and no names', async (_name, o) => {
    const tag = o[1].replace(/\W/g, '');
    if (!fs.existsSync(p('hdr-base.qcow2'))) create('hdr-base.qcow2', '1M');
    qemuImg('create', '-q', '-f', 'qcow2', ...o, '-b', 'hdr-base.qcow2', '-F', 'qcow2', `hq-${tag}.qcow2`, '1M');
    fs.copyFileSync(p(`hq-${tag}.qcow2`), p(`ho-${tag}.qcow2`));
    const cs = Number(info(`hq-${tag}.qcow2`)['cluster-size']);
    for (const [name, format] of [[`${'d/'.repeat(100)}long-name.qcow2`, 'raw'], ['b.qcow2', 'qcow2'], ['', undefined], ['/abs/base.img', 'raw']] as const) {
      qemuImg('rebase', '-u', '-b', name, ...(format ? ['-F', format] : []), `hq-${tag}.qcow2`);
      await rebaseImage(p(`ho-${tag}.qcow2`), name, { backingFormat: format, unsafe: true });
      const head = (f: string) => fs.readFileSync(p(f)).subarray(0, Math.min(cs, 4096));
      expect(head(`ho-${tag}.qcow2`).equals(head(`hq-${tag}.qcow2`)), `${name} ${format}`).toBe(true);
    }
  });

  it('a persistent bitmap survives a rebase: qemu-img lists it, the image is clean', async () => {
    const c = chain('bm');
    qemuImg('bitmap', '--add', c.top, 'bm0');
    await rebaseImage(p(c.top), c.base, { backingFormat: 'qcow2' });
    const i = info(c.top) as { 'format-specific': { data: { bitmaps?: { name: string }[] } } };
    expect(i['format-specific'].data.bitmaps?.map((b) => b.name)).toEqual(['bm0']);
    expect(info(c.top)['backing-filename']).toBe(c.base);
    checkClean(c.top);
    expect(qemuImg('compare', c.top, c.raw)).toContain('Images are identical.');
  });

  it('an image rebased by qemu-img reads the same through us', async () => {
    const c = chain('theirs');
    qemuImg('rebase', '-b', c.base, '-F', 'qcow2', c.top);
    expect(await compareImages(p(c.top), p(c.raw))).toMatchObject({ identical: true });
    qemuImg('rebase', '-b', '', c.top);
    expect(await compareImages(p(c.top), p(c.raw), { strict: false })).toMatchObject({ identical: true });
  });

  it('a relative backing name is stored as given and opened from the image directory, wherever the caller is', async () => {
    const c = chain('rel');
    fs.mkdirSync(p('sub'));
    fs.copyFileSync(p(c.base), p('sub/b.qcow2'));
    fs.renameSync(p(c.top), p('sub/t.qcow2'));
    // the image's header names mid relative to dir: repoint it, unsafely, then rebase safely onto a name relative to sub/
    await rebaseImage(p('sub/t.qcow2'), `../${c.mid}`, { backingFormat: 'qcow2', unsafe: true });
    const o = ours('-b', 'b.qcow2', '-F', 'qcow2', p('sub/t.qcow2'));
    expect(o.code, o.err).toBe(0);
    expect(info('sub/t.qcow2')['backing-filename']).toBe('b.qcow2');
    expect(qemuImg('compare', 'sub/t.qcow2', c.raw)).toContain('Images are identical.');
  }, 60_000);

  it('refuses what qemu-img refuses, the image unchanged', async () => {
    const c = chain('bad');
    const before = fs.readFileSync(p(c.top));
    await expect(rebaseImage(p(c.top), c.base)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('backing format must be specified') });
    await expect(rebaseImage(p(c.top), c.base, { backingFormat: 'nosuch' })).rejects.toMatchObject({ code: 'EINVAL', message: "Invalid format name: 'nosuch'" });
    await expect(rebaseImage(p(c.top), 'missing.qcow2', { backingFormat: 'qcow2' })).rejects.toMatchObject({ message: expect.stringContaining("Could not open new backing file 'missing.qcow2'") });
    await expect(rebaseImage(p(c.top), 'x'.repeat(1024), { backingFormat: 'qcow2', unsafe: true })).rejects.toMatchObject({ code: 'EINVAL' });
    expect(fs.readFileSync(p(c.top)).equals(before)).toBe(true);
    // a raw external data file is the whole disk: no backing file, refused before anything is copied
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'data_file=dfr.raw,data_file_raw=on', 'dfr.qcow2', '1M');
    const dfr = fs.readFileSync(p('dfr.qcow2'));
    expect(spawnSync('qemu-img', ['rebase', '-b', c.base, '-F', 'qcow2', 'dfr.qcow2'], { cwd: dir }).status).toBe(1);
    await expect(rebaseImage(p('dfr.qcow2'), c.base, { backingFormat: 'qcow2' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('data_file_raw') });
    expect(fs.readFileSync(p('dfr.qcow2')).equals(dfr)).toBe(true);
    // no room in a 512-byte header cluster for a long name: ENOSPC, as qemu-img ("No space left")
    create('tiny.qcow2', '1M', '-o', 'cluster_size=512');
    const long = 'y'.repeat(450);
    expect(spawnSync('qemu-img', ['rebase', '-u', '-b', long, '-F', 'raw', 'tiny.qcow2'], { cwd: dir }).status).toBe(1);
    await expect(rebaseImage(p('tiny.qcow2'), long, { backingFormat: 'raw', unsafe: true })).rejects.toMatchObject({ code: 'ENOSPC' });
    checkClean('tiny.qcow2');
    // formats without a backing file
    qemuImg('create', '-q', '-f', 'vpc', 'v.vhd', '1M');
    qemuImg('create', '-q', '-f', 'raw', 'r.raw', '1M');
    for (const [f, fmt] of [['v.vhd', 'vpc'], ['r.raw', 'raw']]) {
      expect(spawnSync('qemu-img', ['rebase', '-u', '-f', fmt, '-b', c.base, '-F', 'qcow2', f], { cwd: dir }).status).toBe(1);
      await expect(rebaseImage(p(f), c.base, { format: fmt, backingFormat: 'qcow2', unsafe: true })).rejects.toMatchObject({ code: 'ENOTSUP' });
    }
  });

  it('the CLI: -u, -p, -q and its errors with exit 1', () => {
    const c = chain('cli');
    expect(ours('-b', p(c.base), p(c.top)).code).toBe(1);
    expect(ours(p(c.top)).err).toContain('Must specify backing file (-b) or use unsafe mode (-u)');
    const o = ours('-p', '-b', c.base, '-F', 'qcow2', p(c.top));
    expect(o.code, o.err).toBe(0);
    expect(o.out).toMatch(/^ {4}\(0\.00\/100%\)\r.* {4}\(100\.00\/100%\)\r\n$/s);
    expect(qemuImg('compare', c.top, c.raw)).toContain('Images are identical.');
    const u = ours('-q', '-u', '-b', '', p(c.top));
    expect(u.code, u.err).toBe(0);
    expect(u.out).toBe('');
    expect(info(c.top)['backing-filename']).toBeUndefined();
  }, 120_000);
});

describe.skipIf(!available)('BlockNode.changeBackingFile on an open node', () => {
  it('rewrites the header while the node serves writes; qemu-img reads the header, the data stays', async () => {
    const c = chain('live');
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: p(c.top) } });
    const writes = Array.from({ length: 16 }, (_, i) => d.write(i * 64 * KIB + 2 * MIB, new Uint8Array(4096).fill(i + 1)));
    await d.node.changeBackingFile(c.base, 'qcow2');
    await Promise.all(writes);
    expect(d.node.info()).toMatchObject({ backingFile: c.base, backingFormat: 'qcow2' });
    await d.close();
    await layer.close();
    expect(info(c.top)).toMatchObject({ 'backing-filename': c.base, 'backing-filename-format': 'qcow2' });
    checkClean(c.top);
    qemuIo(c.top, ['read -P 16 3008k 4k', 'read -P 0 3012k 4k', 'read -P 1 0 4k']);
  });

  it('refuses on a read-only node and on formats without a backing file header', async () => {
    const layer = new BlockLayer();
    try {
      create('ro.qcow2', '1M');
      const ro = await layer.openNode({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: p('ro.qcow2') } });
      await expect(ro.changeBackingFile('x', 'raw')).rejects.toMatchObject({ code: 'EROFS' });
      await ro.unref();
      const mem = await layer.openNode({ driver: 'raw', file: { driver: 'memory', size: MIB } });
      await expect(mem.changeBackingFile('x', 'raw')).rejects.toMatchObject({ code: 'ENOTSUP' });
      await mem.unref();
    } finally {
      await layer.close();
    }
  });
});

describe.skipIf(!available)('safe rebase over random chains (property)', () => {
  it('keeps the guest view of an in-memory model, and qemu-img check stays clean', async () => {
    const SIZE = MIB;
    const opArb = fc.record({
      layer: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
      at: fc.integer({ min: 0, max: SIZE - 1 }),
      len: fc.integer({ min: 1, max: 200 * KIB }),
      fill: fc.integer({ min: 1, max: 255 }),
      zero: fc.boolean(),
    });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 12 }),
        fc.constantFrom(4096, 65536),
        fc.constantFrom(SIZE / 2, SIZE),
        fc.constantFrom<'base' | 'none'>('base', 'none'),
        async (ops, cluster, baseSize, target) => {
          const n = run++;
          const names = [`p${n}-0.qcow2`, `p${n}-1.qcow2`, `p${n}-2.qcow2`];
          create(names[0], String(baseSize), '-o', `cluster_size=${cluster}`);
          create(names[1], String(SIZE), '-o', `cluster_size=${cluster}`, '-b', names[0], '-F', 'qcow2');
          create(names[2], String(SIZE), '-o', `cluster_size=${cluster}`, '-b', names[1], '-F', 'qcow2');
          const model = new Uint8Array(SIZE);
          for (const layer of [0, 1, 2] as const) {
            const d = await openImage(p(names[layer]), { format: 'qcow2' });
            for (const op of ops.filter((o) => o.layer === layer)) {
              const len = Math.min(op.len, d.length - op.at);
              if (len <= 0) continue;
              if (op.zero) await d.writeZeroes(op.at, len);
              else await d.write(op.at, new Uint8Array(len).fill(op.fill));
              model.fill(op.zero ? 0 : op.fill, op.at, op.at + len);
            }
            await d.close();
          }
          await rebaseImage(p(names[2]), target === 'base' ? names[0] : null, { backingFormat: 'qcow2' });
          const d = await openImage(p(names[2]), { format: 'qcow2', readOnly: true });
          const view = await d.read(0, SIZE);
          await d.close();
          expect(Buffer.from(view).equals(Buffer.from(model))).toBe(true);
          checkClean(names[2]);
        },
      ),
      { numRuns: 8 },
    );
  }, 120_000);
});
