import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { entriesPerBlock, maxRefcount, readEntry, writeEntry } from '../../src/drivers/qcow2/refcount-entries.js';

describe('qcow2 refcount entries of every width (refcount_order 0..6)', () => {
  it('entries per block and the largest value follow the width', () => {
    expect(entriesPerBlock(65536, 4)).toBe(32768);
    expect(entriesPerBlock(512, 0)).toBe(4096);
    expect(entriesPerBlock(512, 6)).toBe(64);
    expect([0, 1, 2, 3, 4, 5, 6].map(maxRefcount)).toEqual([1, 3, 15, 255, 65535, 2 ** 32 - 1, Number.MAX_SAFE_INTEGER]);
  });

  it('sub-byte entries start at the least significant bit; wider ones are big-endian', () => {
    const b = new Uint8Array(16);
    writeEntry(b, 0, 0, 1);
    writeEntry(b, 3, 0, 1);
    expect(b[0]).toBe(0b1001);
    b.fill(0);
    writeEntry(b, 1, 1, 3);
    expect(b[0]).toBe(0b1100);
    b.fill(0);
    writeEntry(b, 1, 2, 0xa);
    expect(b[0]).toBe(0xa0);
    b.fill(0);
    writeEntry(b, 1, 4, 0x1234);
    expect([...b.subarray(2, 4)]).toEqual([0x12, 0x34]);
    writeEntry(b, 1, 5, 0x89abcdef);
    expect([...b.subarray(4, 8)]).toEqual([0x89, 0xab, 0xcd, 0xef]);
    writeEntry(b, 1, 6, 2 ** 40 + 5);
    expect(Buffer.from(b).readBigUInt64BE(8)).toBe(2n ** 40n + 5n);
  });

  it('writing one entry never changes its neighbours, and reads back what was written', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), fc.array(fc.tuple(fc.nat(63), fc.double({ min: 0, max: 1, noNaN: true })), { maxLength: 40 }), (order, writes) => {
        const block = new Uint8Array(512);
        const model = new Array<number>(64).fill(0);
        for (const [i, f] of writes) {
          const v = Math.floor(f * maxRefcount(order));
          writeEntry(block, i, order, v);
          model[i] = v;
        }
        for (let i = 0; i < 64; i++) expect(readEntry(block, i, order)).toBe(model[i]);
      }),
    );
  });
});
