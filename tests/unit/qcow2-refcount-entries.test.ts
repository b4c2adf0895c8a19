// Refcount entries of every width: what writeEntry stores is what readEntry reads, the bytes are
// big-endian as qcow2 lays them out (checked against DataView), and neighbours are untouched.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { maxRefcount, readEntry, writeEntry } from '../../src/drivers/qcow2/refcount-entries.js';

describe('qcow2 refcount entries', () => {
  it('round-trip at every width; wide entries are big-endian in the block', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 63 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.uint8Array({ minLength: 512, maxLength: 512 }), (order, index, frac, fill) => {
        const block = Uint8Array.from(fill);
        const before = Uint8Array.from(block);
        const value = Math.floor(frac * maxRefcount(order));
        writeEntry(block, index, order, value);
        expect(readEntry(block, index, order)).toBe(value);
        const bits = 2 ** order;
        if (bits >= 8) {
          const at = (index * bits) / 8;
          const v = new DataView(block.buffer);
          const expected = bits === 8 ? v.getUint8(at) : bits === 16 ? v.getUint16(at) : bits === 32 ? v.getUint32(at) : v.getUint32(at) * 2 ** 32 + v.getUint32(at + 4);
          expect(expected).toBe(value);
          // Only the entry's own bytes changed.
          for (let i = 0; i < block.length; i++) if (i < at || i >= at + bits / 8) expect(block[i]).toBe(before[i]);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
