import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { preallocMode, resizeTarget } from '../../src/tools/resize.js';

const G = 2 ** 30;

describe('resizeTarget: qemu-img resize size arithmetic', () => {
  it('reads absolute sizes, suffixes and relative sizes', () => {
    expect(resizeTarget(G, '10G')).toBe(10 * G);
    expect(resizeTarget(G, 4096)).toBe(4096);
    expect(resizeTarget(G, '+1G')).toBe(2 * G);
    expect(resizeTarget(G, '-512M')).toBe(G / 2);
    expect(resizeTarget(G, '1.5M')).toBe(1.5 * 2 ** 20);
    expect(resizeTarget(G, '+0')).toBe(G);
  });

  it('refuses what qemu-img refuses, with its words and the field', () => {
    expect(() => resizeTarget(G, 'abc')).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'size', message: expect.stringMatching(/^Parameter 'size' expects/) }));
    expect(() => resizeTarget(G, '+-1G')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => resizeTarget(G, '-1G')).toThrow(expect.objectContaining({ code: 'EINVAL', message: 'New image size must be positive' }));
    expect(() => resizeTarget(G, '-2G')).toThrow(expect.objectContaining({ code: 'EINVAL', message: 'New image size must be positive' }));
    expect(() => resizeTarget(G, 0)).toThrow(expect.objectContaining({ code: 'EINVAL', message: 'New image size must be positive' }));
    expect(() => resizeTarget(G, '1E')).toThrow(expect.objectContaining({ code: 'EFBIG', field: 'size' }));
    expect(() => resizeTarget(G, '100000E')).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'size' }));
    expect(() => resizeTarget(G, -5)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => resizeTarget(G, 1.5)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('a relative size is the current size plus or minus the amount (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 40 }), fc.integer({ min: 0, max: 2 ** 40 }), (current, delta) => {
        expect(resizeTarget(current, `+${delta}`)).toBe(current + delta);
        if (delta < current) expect(resizeTarget(current, `-${delta}`)).toBe(current - delta);
        else expect(() => resizeTarget(current, `-${delta}`)).toThrow(/New image size must be positive/);
        expect(resizeTarget(current, String(delta || 1))).toBe(delta || 1);
      }),
    );
  });

  it('knows qemu-img preallocation modes', () => {
    for (const m of ['off', 'metadata', 'falloc', 'full']) expect(preallocMode(m)).toBe(m);
    expect(() => preallocMode('foo')).toThrow(expect.objectContaining({ code: 'EINVAL', message: "Invalid preallocation mode 'foo'", field: 'preallocation' }));
  });
});
