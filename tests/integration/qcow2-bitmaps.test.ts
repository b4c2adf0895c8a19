/**
 * Persistent dirty bitmaps in qcow2 against QEMU: bitmaps made and dirtied by qemu-img/qemu-io
 * are loaded with the bits QEMU's own reader serves (`qemu-nbd -r -B NAME` + `nbdinfo --map`);
 * bitmaps we create, dirty and store are read back by qemu-img info/bitmap/check and qemu-nbd.
 */
import { spawn, spawnSync } from 'node:child_process';
import fc from 'fast-check';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, type Drive, imageInfo } from '../../src/index.js';
import { GranuleSet } from '../../src/node/granule-set.js';
import { haveQemuTools, qemuImg, qemuIo, setQemuCwd } from '../helpers/qemu-images.js';
import { haveProgram, run } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools() && haveProgram('qemu-nbd') && haveProgram('nbdinfo');
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io/qemu-nbd/nbdinfo missing in CI');

let dir: string;
const p = (name: string) => path.join(dir, name);
const layer = new BlockLayer();
type Extents = [number, number][];

beforeAll(() => {
  if (!available) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-bitmaps-'));
  setQemuCwd(dir);
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** The dirty extents QEMU serves for bitmap `name` (qemu-nbd -r -B, read with nbdinfo --map), adjacent ones merged. */
async function qemuDirty(image: string, name: string): Promise<Extents> {
  const r = await run('nbdinfo', ['--json', `--map=qemu:dirty-bitmap:${name}`, '--', '[', 'qemu-nbd', '-r', '-B', name, '-f', 'qcow2', image, ']']);
  if (r.code !== 0) throw new Error(`nbdinfo/qemu-nbd failed: ${r.stderr}`);
  const out: Extents = [];
  for (const e of JSON.parse(r.stdout) as { offset: number; length: number; type: number }[]) {
    if (e.type !== 1) continue;
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === e.offset) last[1] += e.length;
    else out.push([e.offset, e.length]);
  }
  return out;
}

async function ourDirty(d: Drive, name: string): Promise<Extents> {
  const out: Extents = [];
  for await (const e of d.dirtyExtents(name)) out.push([e.offset, e.length]);
  return out;
}

/** qemu-img info's bitmaps (format-specific data), with -U so an image we hold open can be read. */
function qemuBitmaps(image: string): { name: string; granularity: number; flags: string[] }[] {
  const info = JSON.parse(qemuImg('info', '-U', '--output=json', image)) as { 'format-specific': { data: { bitmaps?: { name: string; granularity: number; flags: string[] }[] } } };
  return info['format-specific'].data.bitmaps ?? [];
}

/** qemu-img check: exit code and counts. */
async function qemuCheck(image: string): Promise<{ code: number | null; leaks: number; corruptions: number; report: string }> {
  const r = await run('qemu-img', ['check', '--output=json', '-f', 'qcow2', image]);
  const j = JSON.parse(r.stdout) as { leaks?: number; corruptions?: number };
  return { code: r.code, leaks: j.leaks ?? 0, corruptions: j.corruptions ?? 0, report: r.stdout + r.stderr };
}

async function expectClean(image: string) {
  const c = await qemuCheck(image);
  expect(c, c.report).toMatchObject({ code: 0, leaks: 0, corruptions: 0 });
}

const open = (image: string, readOnly = false) => layer.openDrive({ driver: 'qcow2', readOnly, file: { driver: 'file', filename: image } });

/** An image with QEMU's bitmaps: b0 (64 KiB), b1 (512 B), off (disabled), dirtied by qemu-io writes, zeroes and discards. */
function qemuDirtiedImage(name: string, size = '1G', create: string[] = []): string {
  const img = p(name);
  qemuImg('create', '-q', '-f', 'qcow2', ...create, img, size);
  qemuImg('bitmap', '--add', img, 'b0');
  qemuImg('bitmap', '--add', '-g', '512', img, 'b1');
  qemuImg('bitmap', '--add', '--disable', img, 'off');
  const far = size === '1G' ? ['write 300m 1k', 'write 1023m 1m'] : ['write 33m 1k', 'write 63m 1m'];
  qemuIo(img, ['write 0 4k', 'write 1m 70k', 'write -z 5m 3k', 'discard 40m 64k', ...far]);
  return img;
}

describe.skipIf(!available)('qcow2 persistent bitmaps: loading what QEMU stored', () => {
  it('the dirty extents of QEMU-dirtied bitmaps are what qemu-nbd -B serves (bits in several bitmap clusters)', async () => {
    const img = qemuDirtiedImage('load.qcow2');
    const d = await open(img, true);
    try {
      expect(d.dirtyBitmaps().map((b) => [b.name, b.granularity, b.recording, b.persistent, b.inconsistent])).toEqual([
        ['b0', 65536, true, true, false],
        ['b1', 512, true, true, false],
        ['off', 65536, false, true, false],
      ]);
      for (const name of ['b0', 'b1', 'off']) {
        const ours = await ourDirty(d, name);
        expect(ours, name).toEqual(await qemuDirty(img, name));
        if (name !== 'off') expect(ours.length, name).toBeGreaterThan(3);
      }
    } finally {
      await d.close();
    }
  });

  it('with 512-byte clusters (a bitmap table of many entries, each cluster of bits covering 2 MiB at 512 B granularity)', async () => {
    const img = qemuDirtiedImage('small-clusters.qcow2', '64M', ['-o', 'cluster_size=512']);
    qemuIo(img, ['write 7m 2m', 'write 20m 12m']);
    const d = await open(img, true);
    try {
      for (const name of ['b0', 'b1']) expect(await ourDirty(d, name), name).toEqual(await qemuDirty(img, name));
    } finally {
      await d.close();
    }
  });

  it('a read-write open marks every bitmap in use on disk (qemu-img info shows in-use) and a clean close clears it', async () => {
    const img = qemuDirtiedImage('inuse.qcow2', '64M');
    const d = await open(img);
    try {
      expect(qemuBitmaps(img).map((b) => [b.name, b.flags])).toEqual([
        ['b0', ['in-use', 'auto']],
        ['b1', ['in-use', 'auto']],
        ['off', ['in-use']],
      ]);
    } finally {
      await d.close();
    }
    expect(qemuBitmaps(img).map((b) => [b.name, b.flags])).toEqual([
      ['b0', ['auto']],
      ['b1', ['auto']],
      ['off', []],
    ]);
    await expectClean(img);
  });

  it('QEMU-dirtied bitmaps are kept up to date by our writes, zeroes and discards, and the reverse', async () => {
    const img = qemuDirtiedImage('both-ways.qcow2', '64M');
    const before = await qemuDirty(img, 'b1');
    const d = await open(img);
    await d.write(20 * 2 ** 20 + 100, new Uint8Array(3000));
    await d.writeZeroes(30 * 2 ** 20, 65536);
    await d.discard(50 * 2 ** 20, 2 ** 20);
    const ours = await ourDirty(d, 'b1');
    await d.close();
    expect(ours.length).toBe(before.length + 3);
    expect(await qemuDirty(img, 'b1')).toEqual(ours);
    expect(await qemuDirty(img, 'off')).toEqual([]);
    await expectClean(img);
    // QEMU writes again over what we stored; we see its bits and ours.
    qemuIo(img, ['write 60m 4k']);
    const again = await open(img, true);
    try {
      expect(await ourDirty(again, 'b1')).toEqual(await qemuDirty(img, 'b1'));
      expect((await ourDirty(again, 'b1')).some(([o]) => o === 60 * 2 ** 20)).toBe(true);
    } finally {
      await again.close();
    }
  });
});

describe.skipIf(!available)('qcow2 persistent bitmaps: storing ours', () => {
  it('bitmaps we create and dirty are listed by qemu-img info and served by qemu-nbd -B as we walk them; check finds no leak', async () => {
    const img = p('ours.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '3G');
    const d = await open(img);
    d.addDirtyBitmap('full', { persistent: true });
    d.addDirtyBitmap('fine', { persistent: true, granularity: 512 });
    d.addDirtyBitmap('paused', { persistent: true, granularity: 2 ** 20, disabled: true });
    d.addDirtyBitmap('memory-only');
    for (const [o, n] of [[0, 1], [5000, 70000], [2 ** 31 + 77, 513], [3 * 2 ** 30 - 512, 512]] as const) await d.write(o, new Uint8Array(n).fill(1));
    await d.writeZeroes(2 ** 30, 2 ** 20);
    const ours = { full: await ourDirty(d, 'full'), fine: await ourDirty(d, 'fine') };
    await d.close();
    expect(qemuBitmaps(img)).toEqual([
      { flags: ['auto'], name: 'full', granularity: 65536 },
      { flags: ['auto'], name: 'fine', granularity: 512 },
      { flags: [], name: 'paused', granularity: 2 ** 20 },
    ]);
    expect(await qemuDirty(img, 'full')).toEqual(ours.full);
    expect(await qemuDirty(img, 'fine')).toEqual(ours.fine);
    expect(await qemuDirty(img, 'paused')).toEqual([]);
    await expectClean(img);
    // qemu-img bitmap works on what we stored: merge fine into paused, then clear full.
    qemuImg('bitmap', '--merge', 'fine', img, 'paused');
    qemuImg('bitmap', '--clear', img, 'full');
    const back = await open(img, true);
    try {
      expect(await ourDirty(back, 'full')).toEqual([]);
      expect(await ourDirty(back, 'paused')).toEqual(await qemuDirty(img, 'paused'));
      expect((await ourDirty(back, 'paused')).length).toBeGreaterThan(0);
    } finally {
      await back.close();
    }
  });

  it('create, dirty, close, reopen, remove cycles leave qemu-img check clean and the bitmaps QEMU lists equal to ours', async () => {
    const img = p('cycles.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '256M');
    const names: string[] = [];
    for (let round = 0; round < 6; round++) {
      const d = await open(img);
      if (round % 2 === 0) {
        const name = `bm${round}`;
        d.addDirtyBitmap(name, { persistent: true, granularity: 4096 << round });
        names.push(name);
      } else {
        const gone = names.shift()!;
        await d.removeDirtyBitmap(gone);
        expect(qemuBitmaps(img).map((b) => b.name)).not.toContain(gone);
      }
      await d.write(round * 7 * 2 ** 20, new Uint8Array(8192 * (round + 1)).fill(round));
      const ours = new Map<string, Extents>();
      for (const n of names) ours.set(n, await ourDirty(d, n));
      await d.close();
      expect(qemuBitmaps(img).map((b) => b.name)).toEqual(names);
      for (const n of names) expect(await qemuDirty(img, n), `${n} after round ${round}`).toEqual(ours.get(n));
      await expectClean(img);
    }
    const d = await open(img);
    for (const n of names) await d.removeDirtyBitmap(n);
    await d.close();
    expect(qemuBitmaps(img)).toEqual([]);
    await expectClean(img);
  });

  it('removing a stored bitmap while writes allocate clusters leaves the image clean and the other bitmaps right', async () => {
    const img = p('remove-busy.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '64M');
    const first = await open(img);
    for (const name of ['a', 'b', 'c']) first.addDirtyBitmap(name, { persistent: true, granularity: 4096 });
    await first.write(0, new Uint8Array(1 << 20).fill(1));
    await first.close();
    const d = await open(img);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 48; i++) writes.push(d.write(((i * 7919) % 16000) * 4096, new Uint8Array(8192).fill(i + 1)));
    const removals = [d.removeDirtyBitmap('a'), d.removeDirtyBitmap('c')];
    for (let i = 48; i < 96; i++) writes.push(d.write(((i * 7919) % 16000) * 4096, new Uint8Array(8192).fill(i + 1)));
    await Promise.all([...writes, ...removals]);
    const ours = await ourDirty(d, 'b');
    await d.close();
    expect(qemuBitmaps(img).map((b) => b.name)).toEqual(['b']);
    expect(await qemuDirty(img, 'b')).toEqual(ours);
    await expectClean(img);
  });

  it('adding and removing the bitmaps extension keeps the backing file, its format and an external data file in the header', async () => {
    qemuImg('create', '-q', '-f', 'qcow2', p('base.qcow2'), '16M');
    qemuIo(p('base.qcow2'), ['write -P 0x5a 0 1m']);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('over.qcow2'));
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${p('data.raw')}`, p('data.qcow2'), '16M');
    for (const name of ['over.qcow2', 'data.qcow2']) {
      const img = p(name);
      const header = (i: Record<string, unknown>) => [i['backing-filename'], i['backing-filename-format'], (i['format-specific'] as { data: Record<string, unknown> }).data['data-file']];
      const before = header(JSON.parse(qemuImg('info', '--output=json', img)));
      const d = await open(img);
      d.addDirtyBitmap('mine', { persistent: true });
      await d.write(3 * 65536, new Uint8Array(100).fill(1));
      const ours = await ourDirty(d, 'mine');
      await d.close();
      expect(header(JSON.parse(qemuImg('info', '--output=json', img))), name).toEqual(before);
      expect(await qemuDirty(img, 'mine'), name).toEqual(ours);
      await expectClean(img);
      const again = await open(img);
      await again.removeDirtyBitmap('mine');
      await again.close();
      expect(header(JSON.parse(qemuImg('info', '--output=json', img))), name).toEqual(before);
      expect(qemuBitmaps(img)).toEqual([]);
      await expectClean(img);
    }
    const d = await open(p('over.qcow2'), true);
    try {
      expect((await d.read(0, 4096)).every((x) => x === 0x5a)).toBe(true);
    } finally {
      await d.close();
    }
  });

  it('refuses what QEMU refuses to make persistent: v2 images, a bitmap too large for its granularity', async () => {
    const v2 = p('v2.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', v2, '64M');
    const d = await open(v2);
    try {
      expect(() => d.addDirtyBitmap('x', { persistent: true })).toThrow(/Cannot store dirty bitmaps in qcow2 v2 files/);
      d.addDirtyBitmap('x');
    } finally {
      await d.close();
    }
    // The size limit at 512-byte granularity, where qemu-img bitmap --add draws it: 2 TiB opens, 512 bytes more does not.
    for (const size of [2 ** 41, 2 ** 41 + 512]) {
      const img = p(`edge-${size}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', img, String(size));
      const theirs = (await run('qemu-img', ['bitmap', '--add', '-g', '512', img, 'q'])).code === 0;
      const e = await open(img);
      try {
        let ours = true;
        try {
          e.addDirtyBitmap('edge', { persistent: true, granularity: 512 });
        } catch {
          ours = false;
        }
        expect([size, ours]).toEqual([size, theirs]);
      } finally {
        await e.close();
      }
    }
    const huge = p('huge.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', huge, '5T');
    const h = await open(huge);
    try {
      const e = (() => {
        try {
          h.addDirtyBitmap('big', { persistent: true, granularity: 512 });
        } catch (err) {
          return err;
        }
      })();
      expect(e).toBeInstanceOf(BlockError);
      expect((e as BlockError).message).toMatch(/Too much space will be occupied by the bitmap/);
      h.addDirtyBitmap('big', { persistent: true, granularity: 65536 });
    } finally {
      await h.close();
    }
    expect(qemuBitmaps(huge).map((b) => b.name)).toEqual(['big']);
    await expectClean(huge);
  });
});

const CRASH_CHILD = fileURLToPath(new URL('../helpers/qcow2-bitmap-crash-child.ts', import.meta.url));

/** Runs the crash child on `image` and SIGKILLs it once it has flushed `rounds` rounds; resolves with the rounds it flushed. */
function crashWhileWriting(image: string, rounds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CRASH_CHILD, image], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let flushed = 0;
    let killed = false;
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-5000);
    });
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
        const line = JSON.parse(out.slice(0, nl)) as { flushed?: number };
        out = out.slice(nl + 1);
        if (line.flushed !== undefined) flushed = line.flushed;
        if (flushed >= rounds && !killed) {
          killed = true;
          child.kill('SIGKILL');
        }
      }
    });
    child.on('close', (code, signal) => {
      if (killed && signal === 'SIGKILL') resolve(flushed);
      else reject(new Error(`crash child exited (code ${code}, signal ${signal}) before the kill:\n${err}`));
    });
  });
}

describe.skipIf(!available)('qcow2 persistent bitmaps: SIGKILL while an image is open read-write', () => {
  it('leaves the bitmaps in use (inconsistent, as QEMU marks them): only removal is allowed, flushed data intact, check finds at most leaks', async () => {
    const img = p('crash.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
    qemuImg('bitmap', '--add', img, 'b0');
    qemuImg('bitmap', '--add', '--disable', img, 'b1');
    const flushed = await crashWhileWriting(img, 5);
    expect(qemuBitmaps(img).map((b) => [b.name, b.flags])).toEqual([
      ['b0', ['in-use', 'auto']],
      ['b1', ['in-use']],
    ]);
    const c = await qemuCheck(img);
    expect(c.corruptions, c.report).toBe(0);
    // QEMU refuses to export an inconsistent bitmap too.
    await expect(qemuDirty(img, 'b0')).rejects.toThrow(/inconsistent/i);

    const ro = await open(img, true);
    try {
      expect(ro.dirtyBitmaps().map((b) => [b.name, b.inconsistent, b.count])).toEqual([
        ['b0', true, 0],
        ['b1', true, 0],
      ]);
      await expect(ro.dirtyExtents('b0').next()).rejects.toThrow(BlockError);
      for (let r = Math.max(0, flushed - 512); r < flushed; r++) {
        expect((await ro.read((r % 512) * 65536, 65536)).every((x) => x === (r % 251) + 1), `round ${r}`).toBe(true);
      }
    } finally {
      await ro.close();
    }

    const rw = await open(img);
    expect(() => rw.clearDirtyBitmap('b0')).toThrow(BlockError);
    expect(() => rw.mergeDirtyBitmaps('b1', ['b0'])).toThrow(BlockError);
    await rw.removeDirtyBitmap('b0');
    await rw.close();
    // b1 stays as it was (in use); b0 is gone.
    expect(qemuBitmaps(img).map((b) => [b.name, b.flags])).toEqual([['b1', ['in-use']]]);
    const after = await qemuCheck(img);
    expect(after.corruptions, after.report).toBe(0);
    expect([0, 3]).toContain(after.code);
    qemuImg('bitmap', '--remove', img, 'b1');
    expect(qemuBitmaps(img)).toEqual([]);
  }, 60_000);
});

describe.skipIf(!available)('qcow2 persistent bitmaps in info', () => {
  it('imageInfo and `blocklayer info` (json and human) list the bitmaps we stored as qemu-img info does, in-use ones too', async () => {
    const img = p('info.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
    const d = await open(img);
    d.addDirtyBitmap('on', { persistent: true, granularity: 4096 });
    d.addDirtyBitmap('off', { persistent: true, disabled: true });
    await d.write(0, new Uint8Array(512));
    await d.close();
    qemuImg('bitmap', '--add', img, 'theirs');
    // A crash leaves 'crashed' in use.
    qemuImg('bitmap', '--add', img, 'crashed');
    const held = await open(img);
    await held.removeDirtyBitmap('theirs');
    await held.close();
    await crashWhileWriting(img, 1);
    for (const name of ['on', 'off', 'crashed']) expect(qemuBitmaps(img).map((b) => b.name)).toContain(name);

    const theirs = JSON.parse(qemuImg('info', '--output=json', img)) as Record<string, unknown>;
    const ours = (await imageInfo(img)) as unknown as Record<string, unknown>;
    expect(ours['format-specific']).toEqual(theirs['format-specific']);
    expect((theirs['format-specific'] as { data: { bitmaps: unknown } }).data.bitmaps).toEqual([
      { flags: ['in-use', 'auto'], name: 'on', granularity: 4096 },
      { flags: ['in-use'], name: 'off', granularity: 65536 },
      { flags: ['in-use', 'auto'], name: 'crashed', granularity: 65536 },
    ]);
    const cli = (...args: string[]) => spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
    expect(JSON.parse(cli('info', '--output=json', img).stdout)).toEqual(theirs);
    const human = (text: string) => text.split('\n').filter((l) => !l.startsWith('    features:') && !l.startsWith('disk size:'));
    expect(human(cli('info', img).stdout.trimEnd())).toEqual(human(qemuImg('info', img).trimEnd()));
  }, 60_000);
});

type Op =
  | { kind: 'write' | 'zeroes' | 'discard'; offset: number; length: number }
  | { kind: 'clear' | 'enable' | 'disable' | 'reopen'; bitmap: 0 | 1 };

describe.skipIf(!available)('qcow2 persistent bitmaps: a model of dirty granules', () => {
  it('any sequence of writes, zeroes, discards, clears, enable/disable and reopen leaves exactly the granules the model says, which QEMU serves too', async () => {
    const size = 8 * 2 ** 20;
    const names = ['coarse', 'fine'] as const;
    const granularity = [65536, 4096];
    const range = fc.tuple(fc.nat(size - 1), fc.integer({ min: 1, max: 300_000 })).map(([offset, n]) => ({ offset, length: Math.min(n, size - offset) }));
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.tuple(fc.constantFrom('write' as const, 'zeroes' as const, 'discard' as const), range).map(([kind, r]) => ({ kind, ...r })),
      fc.record({ kind: fc.constantFrom('clear' as const, 'enable' as const, 'disable' as const, 'reopen' as const), bitmap: fc.constantFrom(0 as const, 1 as const) }),
    );
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 14 }), async (ops) => {
        const img = p(`model-${run++}.qcow2`);
        qemuImg('create', '-q', '-f', 'qcow2', img, String(size));
        const model = names.map((_, i) => ({ dirty: new Set<number>(), recording: true, g: granularity[i]! }));
        let d = await open(img);
        const check = async () => {
          for (let i = 0; i < 2; i++) {
            const expected: Extents = [];
            const set = new GranuleSet(size / model[i]!.g);
            for (const g of model[i]!.dirty) set.add(g, g + 1);
            for (const [a, b] of set.runs()) expected.push([a * model[i]!.g, (b - a) * model[i]!.g]);
            expect(await ourDirty(d, names[i]!), names[i]).toEqual(expected);
          }
        };
        try {
          for (let i = 0; i < names.length; i++) d.addDirtyBitmap(names[i]!, { persistent: true, granularity: granularity[i] });
          for (const o of ops) {
            if ('offset' in o) {
              if (o.kind === 'write') await d.write(o.offset, new Uint8Array(o.length).fill(7));
              else if (o.kind === 'zeroes') await d.writeZeroes(o.offset, o.length);
              else await d.discard(o.offset, o.length);
              for (const m of model) if (m.recording) for (let g = Math.floor(o.offset / m.g); g < Math.ceil((o.offset + o.length) / m.g); g++) m.dirty.add(g);
            } else if (o.kind === 'reopen') {
              await d.close();
              d = await open(img);
              await check();
            } else {
              const m = model[o.bitmap]!;
              if (o.kind === 'clear') {
                d.clearDirtyBitmap(names[o.bitmap]);
                m.dirty.clear();
              } else if (o.kind === 'enable') {
                d.enableDirtyBitmap(names[o.bitmap]);
                m.recording = true;
              } else {
                d.disableDirtyBitmap(names[o.bitmap]);
                m.recording = false;
              }
            }
          }
          await check();
          expect(d.dirtyBitmaps().map((b) => b.recording)).toEqual(model.map((m) => m.recording));
        } finally {
          await d.close();
        }
        const fine = new GranuleSet(size / 4096);
        for (const g of model[1]!.dirty) fine.add(g, g + 1);
        expect(await qemuDirty(img, 'fine')).toEqual([...fine.runs()].map(([a, b]) => [a * 4096, (b - a) * 4096]));
        await expectClean(img);
        fs.rmSync(img);
      }),
      { numRuns: 12 },
    );
  }, 240_000);
});

describe.skipIf(!available)('qcow2 persistent bitmaps: hostile bytes', () => {
  it('an image with random bytes in its bitmaps extension, directory, tables or bits opens (read-only and read-write) or is refused with a BlockError, never anything else', async () => {
    const src = p('hostile-src.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', src, '8M');
    qemuImg('bitmap', '--add', src, 'b0');
    qemuImg('bitmap', '--add', '-g', '512', src, 'b1');
    qemuIo(src, ['write 0 64k', 'write 3m 1m', 'write 7m 512']);
    const bytes = fs.readFileSync(src);
    // Where the bitmap metadata is: the extension data, the directory, b1's table and its first data cluster.
    let ext = 112;
    while (bytes.readUInt32BE(ext) !== 0x23852875) ext += 8 + Math.ceil(bytes.readUInt32BE(ext + 4) / 8) * 8;
    const dirOffset = Number(bytes.readBigUInt64BE(ext + 8 + 16));
    const b1Entry = dirOffset + 32;
    const table = Number(bytes.readBigUInt64BE(b1Entry));
    const data = Number(bytes.readBigUInt64BE(table) & 0x00fffffffffffe00n);
    const regions: [number, number][] = [
      [ext, 32],
      [dirOffset, 64],
      [table, 64],
      [data, 4096],
    ];
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.nat(regions.length - 1), fc.array(fc.tuple(fc.nat(4095), fc.nat(255)), { minLength: 1, maxLength: 6 }), async (r, patches) => {
        const [at, len] = regions[r]!;
        const img = p(`hostile-${n++}.qcow2`);
        const b = Buffer.from(bytes);
        for (const [off, value] of patches) b[at + (off % len)] = value;
        fs.writeFileSync(img, b);
        for (const readOnly of [true, false]) {
          try {
            const d = await open(img, readOnly);
            try {
              for (const bm of d.dirtyBitmaps()) if (!bm.inconsistent) for await (const _ of d.dirtyExtents(bm.name));
              if (!readOnly) await d.write(5 * 2 ** 20, new Uint8Array(4096));
            } finally {
              await d.close();
            }
          } catch (e) {
            expect(e, String(e)).toBeInstanceOf(BlockError);
          }
        }
        fs.rmSync(img);
      }),
      { numRuns: 40 },
    );
  }, 120_000);
});
