import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DirtyBitmap } from '../../src/index.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { bitmapStatus, keptOf, MAX_KEPT_RANGES } from '../../src/nbd/bitmap-replies.js';
import { bitmapToExtents } from '../../src/nbd/block-status.js';
import { ExtentArray, MAX_EXTENTS } from '../../src/nbd/extent-array.js';
import { ServerRequest } from '../../src/nbd/request.js';
import { GranuleSet } from '../../src/node/granule-set.js';

const G = 4096;
const SIZE = 300 * G + 100;
const bitmap = (size = SIZE) => new DirtyBitmap('m', size, { granularity: G, recording: true, persistent: false });

/** The chunk a request of `offset`, `length` gets, through the cache (`cached`) or a walk of its own. */
function chunk(b: DirtyBitmap, offset: number, length: number, cached: boolean, limit = MAX_EXTENTS): Buffer {
  const ea = new ExtentArray();
  ea.reset(limit);
  if (cached) bitmapStatus(b, offset, length, ea);
  else bitmapToExtents(b, offset, length, ea);
  return Buffer.from(ea.frame(new ServerRequest(0, P.NBD_CMD_BLOCK_STATUS, 7, 8, offset, length), true, 3));
}

/** Each way a bitmap's bits or size change, applied to `b`. */
const changes: [string, (b: DirtyBitmap) => void][] = [
  ['a write inside one granule (the write path)', (b) => b.record(10 * G + 10, 100)],
  ['a write over granules', (b) => b.record(12 * G, 3 * G)],
  ['markClean of dirty granules', (b) => b.markClean(0, 20 * G)],
  ['clear', (b) => b.clear()],
  ['a merge of another bitmap', (b) => {
    const other = bitmap();
    other.record(16 * G, G);
    b.mergeFrom(other);
  }],
  ['replaceWith (a transaction aborted)', (b) => {
    const other = new GranuleSet(b.granules.size);
    other.add(100, 104);
    b.granules.replaceWith(other);
  }],
  ['a shrink of the node', (b) => b.resize(2 * G)],
];

describe('the kept BLOCK_STATUS answers of a bitmap (bitmap-replies)', () => {
  it('answers a range asked again with the bytes of a walk, and keeps it', () => {
    const b = bitmap();
    b.record(3 * G, 2 * G);
    b.record(50 * G, G);
    const first = chunk(b, 0, SIZE, true);
    expect(first).toEqual(chunk(b, 0, SIZE, false));
    expect(keptOf(b).ranges).toBe(1);
    expect(chunk(b, 0, SIZE, true)).toEqual(first);
    // Another limit (REQ_ONE) or another length is another question.
    expect(chunk(b, 0, SIZE, true, 1)).toEqual(chunk(b, 0, SIZE, false, 1));
    expect(chunk(b, 0, 4 * G, true)).toEqual(chunk(b, 0, 4 * G, false));
    expect(chunk(b, 0, SIZE, true)).toEqual(first);
  });

  for (const [what, change] of changes) {
    it(`answers anew after ${what} between two requests`, () => {
      const b = bitmap();
      b.record(0, 4 * G);
      b.record(100 * G, 2 * G);
      // Every change below touches [0, length).
      const length = 20 * G;
      const before = chunk(b, 0, length, true);
      // Asked twice: the second answer is the kept one.
      expect(chunk(b, 0, length, true)).toEqual(before);
      const version = b.granules.version;
      change(b);
      expect(b.granules.version).not.toBe(version);
      const after = chunk(b, 0, length, true);
      expect(after).toEqual(chunk(b, 0, length, false));
      expect(after).not.toEqual(before);
    });
  }

  it('a write to a granule already dirty changes nothing: the version stays', () => {
    const b = bitmap();
    b.record(0, G);
    chunk(b, 0, SIZE, true);
    const version = b.granules.version;
    b.record(100, 10);
    expect(b.granules.version).toBe(version);
  });

  it('property: whatever the changes between requests, every answer is the walk\'s', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('ask' as const), offset: fc.nat(SIZE - 1), length: fc.integer({ min: 1, max: SIZE }), one: fc.boolean() }),
      fc.record({ kind: fc.constant('write' as const), offset: fc.nat(SIZE - 1), length: fc.integer({ min: 1, max: 8 * G }) }),
      fc.record({ kind: fc.constant('clean' as const), offset: fc.nat(SIZE - 1), length: fc.integer({ min: 1, max: 40 * G }) }),
      fc.record({ kind: fc.constant('clear' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const b = bitmap();
        // A few fixed ranges, so that ranges are asked again.
        const asked: [number, number][] = [];
        for (const o of ops) {
          if (o.kind === 'ask') {
            const offset = asked.length > 0 && o.offset % 2 === 0 ? (asked[o.offset % asked.length] as [number, number])[0] : o.offset;
            const length = Math.min(asked.length > 0 && o.offset % 2 === 0 ? (asked[o.offset % asked.length] as [number, number])[1] : o.length, SIZE - offset);
            asked.push([offset, length]);
            const limit = o.one ? 1 : MAX_EXTENTS;
            expect(chunk(b, offset, length, true, limit)).toEqual(chunk(b, offset, length, false, limit));
          } else if (o.kind === 'write') b.record(o.offset, Math.min(o.length, SIZE - o.offset));
          else if (o.kind === 'clean') b.markClean(o.offset, Math.min(o.length, SIZE - o.offset));
          else b.clear();
        }
      }),
      { numRuns: 300 },
    );
  });

  it('keeps a bounded number of ranges, the oldest forgotten first', () => {
    const b = bitmap(4 * MAX_KEPT_RANGES * G);
    b.record(0, G);
    for (let i = 0; i < MAX_KEPT_RANGES + 10; i++) chunk(b, i * G, G, true);
    expect(keptOf(b).ranges).toBe(MAX_KEPT_RANGES);
    // The newest are kept and still right; the first asked is asked anew.
    expect(chunk(b, 0, G, true)).toEqual(chunk(b, 0, G, false));
    expect(keptOf(b).ranges).toBe(MAX_KEPT_RANGES);
  });
});
