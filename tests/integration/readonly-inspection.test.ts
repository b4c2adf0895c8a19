/**
 * "Reading never writes": images qemu-img reads (a dirty image left by lazy refcounts and a crash,
 * one with persistent bitmaps, one flagged corrupt) are read by every inspecting entry point
 * (info, map, convert's input, check without -r, serve -r, a read-only bench job, openImage with
 * readOnly) as QEMU reads them, and none of their files changes. A read-write open keeps its
 * rules: a dirty image is repaired, a corrupt one is refused, one with bitmaps opens and keeps them.
 * Every image is made by QEMU itself.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, openImage } from '../../src/index.js';
import { driveHash, haveQemuTools, ourMap, referenceMap } from '../helpers/qemu-images.js';
import { ok, run } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('read-only inspection tests skipped: qemu-img/qemu-io not found (apt-get install qemu-utils)');

const INCOMPAT_DIRTY = 1;
const INCOMPAT_CORRUPT = 2;

let dir: string;
const p = (name: string) => path.join(dir, name);
const sha = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

const cli = (...args: string[]) => run(process.execPath, [...CLI, ...args], 120_000);
const qemuImg = (...args: string[]) => ok('qemu-img', args);

/** The incompatible_features field of a qcow2 header (offset 72, 8 bytes big-endian). */
function incompatible(file: string): bigint {
  const b = Buffer.alloc(8);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, b, 0, 8, 72);
  } finally {
    fs.closeSync(fd);
  }
  return b.readBigUInt64BE(0);
}

/** Writes with qemu-io and kills it (SIGKILL from inside) before a clean close: lazy refcounts leave the dirty bit set. */
async function crashAfterWrite(image: string, write: string): Promise<void> {
  const r = await run('qemu-io', ['-f', 'qcow2', '-c', write, '-c', 'sigraise 9', image]);
  expect(r.code).toBeNull(); // killed by the signal, not exited
  expect(incompatible(image) & BigInt(INCOMPAT_DIRTY)).toBe(BigInt(INCOMPAT_DIRTY));
}

interface Kind {
  name: string;
  /** The image file; `others`: the files it reads besides it (backing file, data file). */
  image: string;
  others: string[];
  make(): Promise<void>;
  /** What a read-write open of a copy does. */
  readWrite?: 'repairs' | 'refuses-corrupt' | 'keeps-bitmaps';
}

const KINDS: Kind[] = [
  {
    name: 'a dirty image (lazy refcounts, qemu-io killed after a write)',
    image: 'dirty.qcow2',
    others: [],
    readWrite: 'repairs',
    async make() {
      await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', p('dirty.qcow2'), '4M');
      await crashAfterWrite(p('dirty.qcow2'), 'write -P 0x5a 0 1M');
    },
  },
  {
    name: 'an image with persistent bitmaps',
    image: 'bitmap.qcow2',
    others: [],
    readWrite: 'keeps-bitmaps',
    async make() {
      await qemuImg('create', '-q', '-f', 'qcow2', p('bitmap.qcow2'), '4M');
      await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0x12 2M 8k', p('bitmap.qcow2')]);
      await qemuImg('bitmap', '--add', p('bitmap.qcow2'), 'b0');
      await qemuImg('bitmap', '--add', '--disable', p('bitmap.qcow2'), 'b1');
    },
  },
  {
    name: 'an image marked corrupt (incompatible bit 1)',
    image: 'corrupt.qcow2',
    others: [],
    readWrite: 'refuses-corrupt',
    async make() {
      await qemuImg('create', '-q', '-f', 'qcow2', p('corrupt.qcow2'), '4M');
      await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x21 64k 128k', p('corrupt.qcow2')]);
      const fd = fs.openSync(p('corrupt.qcow2'), 'r+');
      try {
        const b = Buffer.alloc(8);
        fs.readSync(fd, b, 0, 8, 72);
        b.writeBigUInt64BE(b.readBigUInt64BE(0) | BigInt(INCOMPAT_CORRUPT));
        fs.writeSync(fd, b, 0, 8, 72);
      } finally {
        fs.closeSync(fd);
      }
    },
  },
  {
    name: 'a dirty overlay over a backing file',
    image: 'dirty-over.qcow2',
    others: ['base.qcow2'],
    async make() {
      await qemuImg('create', '-q', '-f', 'qcow2', p('base.qcow2'), '4M');
      await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 2M', p('base.qcow2')]);
      await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', '-b', 'base.qcow2', '-F', 'qcow2', p('dirty-over.qcow2'));
      await crashAfterWrite(p('dirty-over.qcow2'), 'write -P 0x5a 1M 1M');
    },
  },
  {
    name: 'a dirty image with an external data file',
    image: 'dirty-data.qcow2',
    others: ['dirty-data.data'],
    async make() {
      await qemuImg('create', '-q', '-f', 'qcow2', '-o', `lazy_refcounts=on,data_file=${p('dirty-data.data')}`, p('dirty-data.qcow2'), '4M');
      await crashAfterWrite(p('dirty-data.qcow2'), 'write -P 0x5a 1M 1M');
    },
  },
];

beforeAll(async () => {
  if (!available) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-readonly-'));
  for (const k of KINDS) await k.make();
}, 120_000);
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Content hash and mtime of each file: what must not change. */
function snapshot(files: string[]): Record<string, { sha: string; mtimeNs: bigint; size: number }> {
  return Object.fromEntries(
    files.map((f) => {
      const st = fs.statSync(f, { bigint: true });
      return [f, { sha: sha(f), mtimeNs: st.mtimeNs, size: Number(st.size) }];
    }),
  );
}

/** The lines of qemu-img info, less "disk size" (ours does not print it). */
function qemuInfoLines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '' && !l.startsWith('disk size:'));
}

/** qemu-img's JSON key for one of ours (compressionType -> compression-type). */

/** Spawns `blocklayer serve IMAGE -r -x q -k SOCK` and waits for its listening line. */
async function serveReadOnly(image: string, sock: string): Promise<{ child: ChildProcess; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [...CLI, 'serve', image, '-r', '-x', 'q', '-k', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let err = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      err += chunk;
      if (/listening on unix:/.test(err)) resolve();
    });
    void exited.then((code) => reject(new Error(`serve exited with ${code} before listening: ${err}`)));
  });
  return { child, exited };
}

/** Opens a copy of the image read-write: a dirty one is repaired (and reads the same), one with bitmaps keeps them, a corrupt one is refused. */
async function readWriteOpen(k: Kind, referenceSha: string): Promise<void> {
  const copy = p(`rw-${k.image}`);
  fs.copyFileSync(p(k.image), copy);
  const layer = new BlockLayer();
  try {
    if (k.readWrite === 'keeps-bitmaps') {
      const d = await openImage(copy, {}, layer);
      expect(d.readOnly).toBe(false);
      expect(d.dirtyBitmaps().map((b) => [b.name, b.recording])).toEqual([['b0', true], ['b1', false]]);
      expect(await driveHash(d)).toBe(referenceSha);
      await d.close();
      const check = await run('qemu-img', ['check', copy]);
      expect([check.code, check.stdout]).toEqual([0, expect.stringContaining('No errors were found on the image.')]);
    } else if (k.readWrite === 'repairs') {
      const d = await openImage(copy, {}, layer);
      expect(d.readOnly).toBe(false);
      expect(incompatible(copy) & BigInt(INCOMPAT_DIRTY)).toBe(0n);
      expect(await driveHash(d)).toBe(referenceSha);
      await d.close();
      const check = await run('qemu-img', ['check', copy]);
      expect([check.code, check.stdout]).toEqual([0, expect.stringContaining('No errors were found on the image.')]);
    } else {
      const rejected = await openImage(copy, {}, layer).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(rejected).toMatchObject({
        code: 'ENOTSUP',
        message: expect.stringContaining('marked corrupt'),
      });
    }
  } finally {
    await layer.close();
  }
}

describe.skipIf(!available)('reading never writes: inspecting images QEMU reads', () => {
  for (const k of KINDS) {
    it(`${k.name}: info, map, convert, check, serve -r, a read bench and openImage({ readOnly }) read it as qemu-img does and change no file${k.readWrite ? `; a read-write open still ${{ repairs: 'repairs it', 'keeps-bitmaps': 'keeps its bitmaps', 'refuses-corrupt': 'refuses it' }[k.readWrite]}` : ''}`, async () => {
      const image = p(k.image);
      const files = [image, ...k.others.map(p)];
      const before = snapshot(files);
      const headerBefore = incompatible(image);
      const reference = p(`${k.image}.qemu.raw`);
      await qemuImg('convert', '-O', 'raw', image, reference);
      const referenceSha = sha(reference);

      // info, text: every line qemu-img prints (disk size aside) in the same order, our extra lines between them
      const theirText = qemuInfoLines(await qemuImg('info', image));
      const text = await cli('info', image);
      expect([text.code, text.stderr]).toEqual([0, '']);
      const ours = text.stdout.split('\n');
      let at = 0;
      for (const line of theirText) {
        const found = ours.indexOf(line, at);
        expect([line, found >= 0]).toEqual([line, true]);
        at = found + 1;
      }
      if (headerBefore & BigInt(INCOMPAT_DIRTY)) expect(ours).toContain('cleanly shut down: no');
      if (headerBefore & BigInt(INCOMPAT_CORRUPT)) expect(ours).toContain('    corrupt: true');

      // info --output=json: qemu-img's JSON, the dirty flag and every format-specific field included
      const theirs = JSON.parse(await qemuImg('info', '--output=json', image)) as Record<string, unknown>;
      const json = await cli('info', '--output=json', image);
      expect(json.code).toBe(0);
      expect(JSON.parse(json.stdout)).toEqual(theirs);

      // map: as qemu-img map --output=json
      const map = await cli('map', image);
      expect(map.code).toBe(0);
      const mapped = (JSON.parse(map.stdout) as Record<string, unknown>[]).map((e) => {
        if (!e.data) delete e.offset;
        return e;
      });
      expect(mapped).toEqual(referenceMap(image));

      // convert: the bytes qemu-img convert -O raw writes
      const out = p(`${k.image}.ours.raw`);
      const conv = await cli('convert', '-q', image, out);
      expect([conv.code, conv.stderr]).toEqual([0, '']);
      expect(fs.statSync(out).size).toBe(fs.statSync(reference).size);
      expect(sha(out)).toBe(referenceSha);

      // check without -r: qemu-img check's report and exit code (a dirty image shows its stale refcounts)
      const theirCheck = await run('qemu-img', ['check', image]);
      const check = await cli('check', image);
      expect([check.code, check.stdout]).toEqual([theirCheck.code, theirCheck.stdout]);

      // serve -r: qemu-img reads the guest view through NBD
      const sock = p('nbd.sock');
      const served = await serveReadOnly(image, sock);
      try {
        const viaNbd = p(`${k.image}.nbd.raw`);
        await qemuImg('convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///q?socket=${sock}`, viaNbd);
        expect(sha(viaNbd)).toBe(referenceSha);
      } finally {
        served.child.kill('SIGTERM');
        expect(await served.exited).toBe(0);
      }

      // a read-only bench job
      const bench = await cli('bench', '--filename', image, '--rw', 'randread', '--bs', '64k', '--size', '1M', '-q', '--json');
      expect([bench.code, bench.stderr]).toEqual([0, '']);

      // the API, read-only: the guest view and its map, the whole graph read-only
      const layer = new BlockLayer();
      try {
        const d = await openImage(image, { readOnly: true }, layer);
        expect(d.readOnly).toBe(true);
        const nodes = [d.node, ...d.node.children.values()];
        for (const n of nodes) expect([n.name, n.readOnly]).toEqual([n.name, true]);
        expect(await driveHash(d)).toBe(referenceSha);
        expect(await ourMap(d)).toEqual(referenceMap(image));
      } finally {
        await layer.close();
      }

      // nothing was repaired, cleared or touched
      expect(incompatible(image)).toBe(headerBefore);
      expect(snapshot(files)).toEqual(before);

      // and a read-write open (of a copy) keeps its rules
      if (k.readWrite) await readWriteOpen(k, referenceSha);
    }, 180_000);

  }
});
