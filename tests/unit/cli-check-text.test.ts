import { describe, expect, it } from 'vitest';
import { checkText, printf2 } from '../../src/cli/check.js';
import { emptyResult } from '../../src/node/check-result.js';

describe('check: percentages as qemu-img prints them (printf %.2f)', () => {
  it('rounds an exact half to the even hundredth, everything else to the nearest', () => {
    // exact halves in binary: glibc rounds them to even, toFixed rounds them up
    expect(printf2(3.125)).toBe('3.12');
    expect(printf2(0.125)).toBe('0.12');
    expect(printf2(0.375)).toBe('0.38');
    expect(printf2(1.5625)).toBe('1.56');
    // not exact halves (the double is just below or above): nearest
    expect(printf2(2.675)).toBe('2.67');
    expect(printf2(0.005)).toBe('0.01');
    expect(printf2(4.6875)).toBe('4.69');
    expect(printf2((100 * 1) / 3)).toBe('33.33');
    expect(printf2(0)).toBe('0.00');
    expect(printf2(100)).toBe('100.00');
  });

  it('2 of 64 clusters allocated is 3.12%, as qemu-img check says', () => {
    const r = { ...emptyResult('x.qcow2', 'qcow2'), totalClusters: 64, allocatedClusters: 2, imageEndOffset: 458752 };
    expect(checkText(r)).toBe(['No errors were found on the image.', '2/64 = 3.12% allocated, 0.00% fragmented, 0.00% compressed clusters', 'Image end offset: 458752'].join('\n'));
  });
});
