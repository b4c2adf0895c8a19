import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { alignedBuffer, isAligned } from '../../src/tools/aligned-buffer.js';

const koffi = createRequire(import.meta.url)('koffi') as { address(v: unknown): bigint };

describe('alignedBuffer', () => {
  it('gives memory at a multiple of the alignment, of the size asked; views are aligned exactly where their address is', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 256 * 1024 }), fc.constantFrom(512, 4096, 65536), fc.nat(64), (bytes, align, shift) => {
        const b = alignedBuffer(bytes, align);
        expect(b).toBeDefined();
        expect(b!.length).toBe(bytes);
        expect(koffi.address(b) % BigInt(align)).toBe(0n);
        expect(isAligned(b!, align)).toBe(true);
        const view = b!.subarray(Math.min(shift * 512, bytes));
        expect(isAligned(view, align)).toBe(koffi.address(view) % BigInt(align) === 0n);
      }),
      { numRuns: 50 },
    );
  });

  it('a buffer it did not make is never taken for aligned', () => {
    expect(isAligned(Buffer.allocUnsafeSlow(8192), 1)).toBe(false);
  });
});
