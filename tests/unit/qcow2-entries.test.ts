import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bigEntryOffset,
  COMPRESSED,
  COPIED,
  compressedHiWord,
  compressedHost,
  compressedLength,
  compressedSectors,
  copiedEntry,
  entryHex,
  entryOffset,
  offsetHiWord,
  offsetLoWord,
  reftableEntryOffset,
  sectorsSpanned,
  setCopied,
  ZERO_FLAG,
} from '../../src/drivers/qcow2/entries.js';

const words = (v: bigint) => [Number(v >> 32n), Number(v & 0xffffffffn)] as const;
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

describe('qcow2 table entries', () => {
  it('the offset of a standard entry is bits 9-55, whatever the flags', () => {
    fc.assert(
      fc.property(u64, (v) => {
        const [hi, lo] = words(v);
        expect(entryOffset(hi, lo)).toBe(Number(v & 0x00fffffffffffe00n));
        expect(reftableEntryOffset(hi, lo)).toBe(Number(v & ~0x1ffn & (2n ** 64n - 1n)));
        expect(entryHex(hi, lo)).toBe(Number(v).toString(16));
      }),
    );
  });

  it('encodes an aligned host offset with or without COPIED and the zero flag', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 47 - 1 }), fc.boolean(), fc.boolean(), (cluster, copied, zero) => {
        const host = cluster * 512;
        const hi = offsetHiWord(host, copied);
        const lo = offsetLoWord(host, zero);
        const v = (BigInt(hi) << 32n) | BigInt(lo);
        expect(v).toBe(BigInt(host) | (copied ? 1n << 63n : 0n) | (zero ? 1n : 0n));
        expect(entryOffset(hi, lo)).toBe(host);
        expect((hi & COPIED) !== 0).toBe(copied);
        expect((lo & ZERO_FLAG) !== 0).toBe(zero);
        expect(setCopied(setCopied(hi, !copied), copied)).toBe(hi);
      }),
    );
    expect(copiedEntry(0x10000)).toBe((1n << 63n) | 0x10000n);
    expect(bigEntryOffset(copiedEntry(0x123450000))).toBe(0x123450000);
  });

  it('compressed entries: host offset and sector count, as the spec lays them out', () => {
    fc.assert(
      fc.property(fc.integer({ min: 9, max: 21 }), fc.bigInt({ min: 0n, max: 2n ** 62n - 1n }), fc.boolean(), (bits, low62, copied) => {
        const v = (1n << 62n) | low62 | (copied ? 1n << 63n : 0n);
        const [hi, lo] = words(v);
        const shift = BigInt(62 - (bits - 8));
        const host = Number(low62 & ((1n << shift) - 1n));
        const sectors = Number(low62 >> shift) + 1;
        expect(hi & COMPRESSED).not.toBe(0);
        expect(compressedHost(hi, lo, bits)).toBe(host);
        expect(compressedSectors(hi, bits)).toBe(sectors);
        expect(compressedLength(hi, lo, bits)).toBe(sectors * 512 - (host % 512));
      }),
    );
  });

  it('a compressed entry written for n bytes at host reads back the same place and enough sectors', () => {
    fc.assert(
      fc.property(fc.integer({ min: 9, max: 21 }), fc.integer({ min: 1, max: 2 ** 40 }), fc.integer({ min: 1, max: 2 ** 21 }), (bits, host, n) => {
        const bytes = Math.min(n, 2 ** bits);
        const hi = compressedHiWord(host, bytes, bits);
        const lo = host >>> 0;
        expect(compressedHost(hi, lo, bits)).toBe(host);
        expect(compressedSectors(hi, bits)).toBe(sectorsSpanned(host, bytes));
        expect(compressedLength(hi, lo, bits)).toBeGreaterThanOrEqual(bytes);
        expect(hi & COPIED).toBe(0);
      }),
    );
  });
});
