// The write path's shortcut when exactly one bitmap of a node records: it must follow every way
// bitmaps come, go, start and stop recording, so each recording bitmap sees every write.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import type { DirtyBitmap } from '../../src/node/dirty-bitmap.js';

const SIZE = 300_000; // not a multiple of any granularity below: the last granule is short

/** The dirty granules of a bitmap, as granule numbers. */
function granulesOf(b: DirtyBitmap): number[] {
  const out: number[] = [];
  for (const [first, end] of b.granules.runs()) for (let g = first; g < end; g++) out.push(g);
  return out;
}

describe('dirty bitmaps: one recording bitmap', () => {
  it('records writes inside one granule, across granules, and none of an empty write', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: SIZE });
    d.addDirtyBitmap('b', { granularity: 4096 });
    const b = d.bitmapNode.bitmaps.get('b');
    await d.write(5000, new Uint8Array(100)); // granule 1
    await d.write(4095, new Uint8Array(2)); // granules 0 and 1
    await d.write(40_960, new Uint8Array(4096)); // granule 10 exactly
    await d.write(100_000, new Uint8Array(0)); // nothing
    await d.write(SIZE - 1, new Uint8Array(1)); // the short last granule
    expect(granulesOf(b)).toEqual([0, 1, 10, Math.floor((SIZE - 1) / 4096)]);
  });

  it('a listener on the only recording bitmap (a stream guard) hears every write, and the writes are recorded', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: SIZE });
    d.addDirtyBitmap('b', { granularity: 4096 });
    const b = d.bitmapNode.bitmaps.get('b');
    const heard: [number, number][] = [];
    b.onRecord((offset, length) => heard.push([offset, length]));
    await d.write(5000, new Uint8Array(100));
    await d.write(40_960, new Uint8Array(8192));
    b.onRecord(null);
    await d.write(81_920, new Uint8Array(1));
    expect(heard).toEqual([
      [5000, 100],
      [40_960, 8192],
    ]);
    expect(granulesOf(b)).toEqual([1, 10, 11, 20]);
  });

  it('a bitmap disabled and enabled directly (as a transaction does) stops and starts recording', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: SIZE });
    d.addDirtyBitmap('a', { granularity: 4096 });
    d.addDirtyBitmap('b', { granularity: 4096, disabled: true });
    const a = d.bitmapNode.bitmaps.get('a');
    const b = d.bitmapNode.bitmaps.get('b');
    await d.write(0, new Uint8Array(1)); // a alone records
    b.setRecording(true);
    await d.write(8192, new Uint8Array(1)); // both
    a.setRecording(false);
    await d.write(16_384, new Uint8Array(1)); // b alone
    b.setRecording(false);
    await d.write(24_576, new Uint8Array(1)); // neither
    a.setRecording(true);
    await d.write(32_768, new Uint8Array(1)); // a alone
    expect(granulesOf(a)).toEqual([0, 2, 8]);
    expect(granulesOf(b)).toEqual([2, 4]);
  });

  it('an internal bitmap records beside a disabled named one, and the named one alone after its release', async () => {
    await using layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: SIZE });
    const bitmaps = d.bitmapNode.bitmaps;
    d.addDirtyBitmap('named', { granularity: 4096, disabled: true });
    const internal = bitmaps.addInternal(65536);
    await d.write(70_000, new Uint8Array(1));
    d.enableDirtyBitmap('named');
    await d.write(200_000, new Uint8Array(1));
    bitmaps.releaseInternal(internal);
    await d.write(0, new Uint8Array(1));
    expect(granulesOf(internal)).toEqual([1, 3]);
    expect(granulesOf(bitmaps.get('named'))).toEqual([0, Math.floor(200_000 / 4096)]);
  });

  it('every recording bitmap holds exactly the granules written while it recorded, whatever comes and goes', async () => {
    const names = ['p', 'q', 'r'] as const;
    const grains = { p: 512, q: 4096, r: 65536 } as const;
    const op = fc.oneof(
      fc.record({ kind: fc.constantFrom('write', 'zero', 'discard'), which: fc.constantFrom(...names), at: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 0, max: 20_000 }) }),
      fc.record({ kind: fc.constantFrom('add', 'remove', 'enable', 'disable', 'direct-on', 'direct-off'), which: fc.constantFrom(...names), at: fc.constant(0), len: fc.constant(0) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 30 }), async (ops) => {
        await using layer = new BlockLayer();
        const d = await layer.openDrive({ driver: 'memory', size: SIZE });
        const bitmaps = d.bitmapNode.bitmaps;
        const model = new Map<string, { recording: boolean; granules: Set<number> }>();
        for (const { kind, which, at, len } of ops) {
          const m = model.get(which);
          if (kind === 'write' || kind === 'zero' || kind === 'discard') {
            const n = Math.min(len, SIZE - at);
            if (kind === 'write') await d.write(at, new Uint8Array(n));
            else if (kind === 'zero') await d.writeZeroes(at, n);
            else await d.discard(at, n);
            if (n === 0) continue;
            for (const [name, s] of model) {
              if (!s.recording) continue;
              const g = grains[name as keyof typeof grains];
              for (let x = Math.floor(at / g); x < Math.ceil((at + n) / g); x++) s.granules.add(x);
            }
          } else if (kind === 'add') {
            if (m) continue;
            d.addDirtyBitmap(which, { granularity: grains[which] });
            model.set(which, { recording: true, granules: new Set() });
          } else if (m !== undefined) {
            if (kind === 'remove') {
              await d.removeDirtyBitmap(which);
              model.delete(which);
            } else if (kind === 'enable' || kind === 'disable') {
              if (kind === 'enable') d.enableDirtyBitmap(which);
              else d.disableDirtyBitmap(which);
              m.recording = kind === 'enable';
            } else {
              bitmaps.get(which).setRecording(kind === 'direct-on');
              m.recording = kind === 'direct-on';
            }
          }
        }
        for (const [name, s] of model) expect(granulesOf(bitmaps.get(name))).toEqual([...s.granules].sort((x, y) => x - y));
      }),
      { numRuns: 200 },
    );
  });
});
