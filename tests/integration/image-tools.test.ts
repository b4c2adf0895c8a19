import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, convertImage, imageInfo, imageMap } from '../../src/index.js';
import { haveQemuTools } from '../helpers/qemu-images.js';

const FIX = path.join(import.meta.dirname, '../fixtures/qcow2');
const available = haveQemuTools();
if (!available) console.log('image tools tests skipped: qemu-img/qemu-io not installed (apt-get install qemu-utils)');

const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { encoding: 'utf8' });

/** qemu-img info's JSON without what we cannot know (a snapshot's icount, kept in the snapshot's extra data). */
function withoutIcount(info: unknown): unknown {
  if (Array.isArray(info)) return info.map(withoutIcount);
  const o = info as { snapshots?: Record<string, unknown>[] };
  if (o.snapshots) o.snapshots = o.snapshots.map(({ icount: _i, ...rest }) => rest);
  return o;
}

/** A value as JSON gives it (undefined keys gone, key order kept). */
const asJson = (v: unknown) => JSON.parse(JSON.stringify(v));

let dir = '';
const images: Record<string, string> = {};

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-image-tools-'));
  // 24 MiB of data (six 4 MiB windows), then a 8 MiB hole
  images.data = path.join(dir, 'data.raw');
  const fd = fs.openSync(images.data, 'w');
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < 24; i++) fs.writeSync(fd, block.fill((i % 250) + 1), 0, block.length, i << 20);
  fs.ftruncateSync(fd, 32 << 20);
  fs.closeSync(fd);
  if (!available) return;
  images.raw = path.join(dir, 'r.raw');
  qemuImg('create', '-q', '-f', 'raw', images.raw, '1M');
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 7 64k 64k', images.raw], { stdio: 'ignore' });
  for (const n of ['over', 'snap', 'v2', 'zstd']) images[n] = path.join(FIX, `${n}.qcow2`);
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!available)('imageInfo and imageMap: what qemu-img prints as JSON', () => {
  it('imageInfo is qemu-img info --output=json, key by key (v3 with backing, snapshots, v2, zstd, raw)', async () => {
    for (const name of ['over', 'snap', 'v2', 'zstd', 'raw']) {
      const theirs = withoutIcount(JSON.parse(qemuImg('info', '--output=json', images[name])));
      const ours = asJson(await imageInfo(images[name]));
      expect([name, ours]).toEqual([name, theirs]);
    }
  });

  it('imageInfo with backingChain is qemu-img info --backing-chain: each image, top first', async () => {
    const theirs = withoutIcount(JSON.parse(qemuImg('info', '--backing-chain', '--output=json', images.over)));
    const ours = await imageInfo(images.over, { backingChain: true });
    expect(ours.length).toBe(2);
    expect(asJson(ours)).toEqual(theirs);
  });

  it('imageInfo takes the format as given and a snapshot (its size)', async () => {
    const raw = await imageInfo(images.over, { format: 'raw' });
    expect(raw.format).toBe('raw');
    expect(raw['virtual-size']).toBe(fs.statSync(images.over).size);
    const snaps = (await imageInfo(images.snap)).snapshots ?? [];
    expect(snaps.length).toBeGreaterThan(0);
    const ofSnap = await imageInfo(images.snap, { snapshot: snaps[0].name });
    expect(ofSnap.format).toBe('qcow2');
  });

  it('imageMap is qemu-img map --output=json (qcow2 over a backing file, raw)', async () => {
    for (const name of ['over', 'raw', 'zstd']) {
      const theirs = JSON.parse(qemuImg('map', '--output=json', images[name])) as Record<string, unknown>[];
      // qemu-img 8.2+ adds "compressed"; the rest is what we give
      const known = theirs.map(({ compressed: _c, ...rest }) => rest);
      expect([name, asJson(await imageMap(images[name]))]).toEqual([name, known]);
    }
  });

  it("on the caller's layer: the layer stays open, the image is closed", async () => {
    const layer = new BlockLayer();
    try {
      const info = await imageInfo(images.v2, { layer });
      expect(info['format-specific']?.data.compat).toBe('0.10');
      expect((await imageMap(images.raw, { layer })).length).toBeGreaterThan(0);
      expect(layer.isClosed).toBe(false);
      // nothing left open: the same image opens read-write on the layer
      const d = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: images.raw } });
      await d.close();
    } finally {
      await layer.close();
    }
  });
});

describe('convertImage', () => {
  it.skipIf(!available)('writes raw and compressed qcow2 that qemu-img compare finds equal; onProgress counts up to the size', async () => {
    const raw = path.join(dir, 'out.raw');
    const seen: [number, number][] = [];
    const r = await convertImage(images.data, raw, { onProgress: (done, total) => seen.push([done, total]) });
    expect(r).toEqual({ virtualSize: 32 << 20, outputFormat: 'raw' });
    expect(seen.at(-1)).toEqual([32 << 20, 32 << 20]);
    expect(seen.every(([d, t], i) => t === 32 << 20 && (i === 0 || d > seen[i - 1][0]))).toBe(true);
    qemuImg('compare', '-q', images.data, raw);
    const q = path.join(dir, 'out.qcow2');
    await convertImage(images.data, q, { outputFormat: 'qcow2', compress: true, compressionType: 'zstd', clusterSize: 128 * 1024 });
    const info = JSON.parse(qemuImg('info', '--output=json', q));
    expect([info['cluster-size'], info['format-specific'].data['compression-type']]).toEqual([128 * 1024, 'zstd']);
    qemuImg('check', '-q', q);
    qemuImg('compare', '-q', images.data, q);
  });

  it('an abort mid-convert rejects with ECANCELED whose cause is the reason, and leaves no output', async () => {
    const out = path.join(dir, 'aborted.qcow2');
    const ac = new AbortController();
    const reason = new Error('stop here');
    let calls = 0;
    const p = convertImage(images.data, out, {
      outputFormat: 'qcow2',
      onProgress: () => {
        calls++;
        ac.abort(reason);
      },
      signal: ac.signal,
    });
    const e = await p.then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(BlockError);
    expect((e as BlockError).code).toBe('ECANCELED');
    expect((e as BlockError).cause).toBe(reason);
    expect(calls).toBeGreaterThan(0);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(dir).filter((f) => f.includes('aborted'))).toEqual([]);
  });

  it('an already aborted signal: ECANCELED before anything is written; an existing output is left as it was', async () => {
    const out = path.join(dir, 'kept.raw');
    fs.writeFileSync(out, 'old');
    const reason = new Error('never mind');
    const e = await convertImage(images.data, out, { signal: AbortSignal.abort(reason) }).catch((x: unknown) => x);
    expect([(e as BlockError).code, (e as BlockError).cause]).toEqual(['ECANCELED', reason]);
    expect(fs.readFileSync(out, 'utf8')).toBe('old');
  });

  it('refuses options a raw output cannot have, and backing or data files (the output is standalone)', async () => {
    const out = path.join(dir, 'refused.raw');
    await expect(convertImage(images.data, out, { compress: true })).rejects.toMatchObject({ code: 'EINVAL', field: 'compress' });
    await expect(convertImage(images.data, out, { clusterSize: 4096 })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(convertImage(images.data, out, { outputFormat: 'qcow2', ...({ backing: 'x' } as object) })).rejects.toMatchObject({ code: 'ENOTSUP', field: 'backing' });
    expect(fs.existsSync(out)).toBe(false);
  });

  it('takes drive options as its input', async () => {
    const out = path.join(dir, 'from-options.raw');
    await convertImage({ driver: 'raw', readOnly: true, file: { driver: 'file', filename: images.data, readOnly: true } }, out);
    expect(fs.readFileSync(out).equals(fs.readFileSync(images.data))).toBe(true);
  });
});
