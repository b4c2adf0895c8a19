import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CHAIN_CHUNK, isZero } from '../../src/jobs/commit-chain.js';

describe('isZero (a commit or stream piece written as zeroes)', () => {
  it('agrees with a byte-by-byte look, for any view of any buffer', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 9000 }), fc.integer({ min: 0, max: 15 }), fc.option(fc.nat(), { nil: undefined }), (length, start, poke) => {
        const buf = new Uint8Array(start + length + 16);
        // A non-zero byte just outside the view must not count.
        buf.fill(7, 0, start);
        buf.fill(7, start + length);
        const view = buf.subarray(start, start + length);
        if (poke !== undefined && length > 0) view[poke % length] = 1 + (poke % 255);
        expect(isZero(view)).toBe(view.every((b) => b === 0));
      }),
    );
  });

  it('looks past the first chunk of a piece wider than one', () => {
    const data = new Uint8Array(2 * CHAIN_CHUNK + 5);
    expect(isZero(data)).toBe(true);
    data[2 * CHAIN_CHUNK + 4] = 1;
    expect(isZero(data)).toBe(false);
    data[2 * CHAIN_CHUNK + 4] = 0;
    data[CHAIN_CHUNK] = 1;
    expect(isZero(data)).toBe(false);
  });
});
