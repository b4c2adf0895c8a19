import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer, DirtyBitmap } from '../../src/index.js';

const MiB = 2 ** 20;

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('dirty bitmaps on a drive', () => {
  it('record writes, write-zeroes and discards by granule, in order, merged into extents', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 8 * MiB });
    await d.write(0, new Uint8Array(100)); // before the bitmap: not recorded
    expect(d.addDirtyBitmap('b0', { granularity: 65536 })).toMatchObject({ name: 'b0', granularity: 65536, count: 0, recording: true, busy: false, persistent: false, inconsistent: false });
    await d.write(70_000, new Uint8Array(10)); // granule 1
    await d.writeZeroes(3 * 65536 - 1, 2); // granules 2 and 3
    await d.discard(6 * 65536, 65536); // granule 6
    expect(d.dirtyBitmaps()[0]!.count).toBe(4 * 65536);
    expect(await collect(d.dirtyExtents('b0'))).toEqual([
      { offset: 65536, length: 3 * 65536 },
      { offset: 6 * 65536, length: 65536 },
    ]);
    // A sub-range is clipped to it.
    expect(await collect(d.dirtyExtents('b0', { offset: 100_000, length: 50_000 }))).toEqual([{ offset: 100_000, length: 50_000 }]);
  });

  it('default granularity is 64 KiB without clusters; disabled bitmaps do not record; clear empties', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: MiB });
    d.addDirtyBitmap('on');
    d.addDirtyBitmap('off', { disabled: true });
    await d.write(0, new Uint8Array(1));
    const [on, off] = d.dirtyBitmaps();
    expect(on).toMatchObject({ granularity: 65536, count: 65536, recording: true });
    expect(off).toMatchObject({ count: 0, recording: false });
    d.enableDirtyBitmap('off');
    d.disableDirtyBitmap('on');
    await d.write(500_000, new Uint8Array(1));
    expect(d.dirtyBitmaps().map((b) => b.count)).toEqual([65536, 65536]);
    d.clearDirtyBitmap('on');
    expect(d.dirtyBitmaps()[0]!.count).toBe(0);
  });

  it('writes through a throttle filter reach the bitmap on the node below it', async () => {
    await using layer = new BlockLayer();
    layer.createThrottleGroup('g', { iopsTotal: 1000 });
    const d = await layer.openDrive({ driver: 'throttle', throttleGroup: 'g', file: { driver: 'memory', size: MiB } });
    d.addDirtyBitmap('b');
    expect(d.bitmapNode.driver.name).toBe('memory');
    await d.write(131_072, new Uint8Array(4096));
    expect(await collect(d.dirtyExtents('b'))).toEqual([{ offset: 131_072, length: 65536 }]);
  });

  it('merges bitmaps of other granularities and refuses bad input with QEMU wording', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: MiB });
    d.addDirtyBitmap('small', { granularity: 512 });
    d.addDirtyBitmap('big', { granularity: 65536 });
    await d.write(1024, new Uint8Array(10));
    d.disableDirtyBitmap('big');
    d.clearDirtyBitmap('big');
    d.mergeDirtyBitmaps('big', ['small']);
    expect(d.dirtyBitmaps()[1]!.count).toBe(65536);
    expect(() => d.addDirtyBitmap('small')).toThrow(expect.objectContaining({ code: 'EEXIST', message: 'Bitmap already exists: small' }));
    expect(() => d.addDirtyBitmap('x', { granularity: 1000 })).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'granularity' }));
    expect(() => d.addDirtyBitmap('x', { granularity: 256 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => d.addDirtyBitmap('')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => d.addDirtyBitmap('x'.repeat(1024))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => d.addDirtyBitmap('p', { persistent: true })).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
    expect(() => d.clearDirtyBitmap('nope')).toThrow(expect.objectContaining({ code: 'ENOENT', message: "Dirty bitmap 'nope' not found" }));
    await expect(collect(d.dirtyExtents('nope'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(collect(d.dirtyExtents('small', { offset: MiB, length: 1 }))).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('a busy bitmap refuses changes and removal; released, it is removed', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: MiB });
    d.addDirtyBitmap('b');
    const bitmap = d.bitmapNode.bitmaps.get('b');
    bitmap.acquire();
    expect(d.dirtyBitmaps()[0]!.busy).toBe(true);
    expect(() => d.clearDirtyBitmap('b')).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    expect(() => d.disableDirtyBitmap('b')).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    await expect(d.removeDirtyBitmap('b')).rejects.toMatchObject({ code: 'EBUSY' });
    // A busy bitmap still records and can be read (an export reads it).
    await d.write(0, new Uint8Array(1));
    expect(await collect(d.dirtyExtents('b'))).toEqual([{ offset: 0, length: 65536 }]);
    bitmap.release();
    await d.removeDirtyBitmap('b');
    expect(d.dirtyBitmaps()).toEqual([]);
  });

  it('an inconsistent bitmap can only be removed', () => {
    const b = new DirtyBitmap('i', MiB, { granularity: 65536, recording: true, persistent: true, inconsistent: true });
    expect(() => b.check('modify')).toThrow(/inconsistent/);
    expect(() => b.check('read')).toThrow(/inconsistent/);
    expect(() => b.check('remove')).not.toThrow();
  });

  it('aborting a walk rejects with ECANCELED and the reason as cause', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: MiB });
    d.addDirtyBitmap('b', { granularity: 4096 });
    for (let i = 0; i < 10; i++) await d.write(i * 8192, new Uint8Array(1));
    const ac = new AbortController();
    const seen: number[] = [];
    const reason = new Error('stop');
    await expect(
      (async () => {
        for await (const e of d.dirtyExtents('b', { signal: ac.signal })) {
          seen.push(e.offset);
          if (seen.length === 3) ac.abort(reason);
        }
      })(),
    ).rejects.toMatchObject({ code: 'ECANCELED', cause: reason });
    expect(seen).toEqual([0, 8192, 16384]);
  });

  it('the dirty extents are exactly the granules any sequence of writes, zeroes, discards, clears and merges touched', async () => {
    const size = 300_000; // not a multiple of the granularity: the last granule is short
    const g = 4096;
    const op = fc.oneof(
      fc.record({ kind: fc.constantFrom('write', 'zero', 'discard'), at: fc.integer({ min: 0, max: size - 1 }), len: fc.integer({ min: 1, max: 20_000 }) }),
      fc.record({ kind: fc.constantFrom('clear', 'disable', 'enable', 'merge'), at: fc.constant(0), len: fc.constant(0) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 25 }), async (ops) => {
        await using layer = new BlockLayer();
        const d = await layer.openDrive({ driver: 'memory', size });
        d.addDirtyBitmap('b', { granularity: g });
        d.addDirtyBitmap('other', { granularity: 512 });
        const model = new Set<number>();
        const other = new Set<number>();
        let recording = true;
        for (const { kind, at, len } of ops) {
          const n = Math.min(len, size - at);
          if (kind === 'write' || kind === 'zero' || kind === 'discard') {
            if (kind === 'write') await d.write(at, new Uint8Array(n));
            else if (kind === 'zero') await d.writeZeroes(at, n);
            else await d.discard(at, n);
            if (recording) for (let x = Math.floor(at / g); x < Math.ceil((at + n) / g); x++) model.add(x);
            for (let x = Math.floor(at / 512); x < Math.ceil((at + n) / 512); x++) other.add(x);
          } else if (kind === 'clear') {
            d.clearDirtyBitmap('b');
            model.clear();
          } else if (kind === 'disable') {
            d.disableDirtyBitmap('b');
            recording = false;
          } else if (kind === 'enable') {
            d.enableDirtyBitmap('b');
            recording = true;
          } else {
            d.mergeDirtyBitmaps('b', ['other']);
            for (const x of other) model.add(Math.floor((x * 512) / g));
          }
        }
        const bytes = new Uint8Array(size);
        for (const e of await collect(d.dirtyExtents('b'))) bytes.fill(1, e.offset, e.offset + e.length);
        const want = new Uint8Array(size);
        for (const x of model) want.fill(1, x * g, Math.min(size, (x + 1) * g));
        expect(Buffer.from(bytes).equals(Buffer.from(want))).toBe(true);
        expect(d.dirtyBitmaps()[0]!.count).toBe(model.size * g);
      }),
      { numRuns: 60 },
    );
  });
});
