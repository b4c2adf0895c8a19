import { describe, expect, it } from 'vitest';
import { sectorRuns } from '../../src/drivers/vdi/block-map.js';

describe('vdi sectorRuns: the changed sectors of a block map as ranges to write', () => {
  it('joins sectors that follow each other into one range', () => {
    expect(sectorRuns([0, 512, 1024, 1536])).toEqual([[0, 2048]]);
  });

  it('keeps sectors apart when a sector lies between them', () => {
    expect(sectorRuns([0, 1024, 1536, 4096])).toEqual([
      [0, 512],
      [1024, 2048],
      [4096, 4608],
    ]);
  });

  it('sorts starts given in any order (a Set in allocation order) and counts a repeated one once', () => {
    expect(sectorRuns(new Set([2048, 512, 1536, 1024]))).toEqual([[512, 2560]]);
    expect(sectorRuns([512, 0, 512])).toEqual([[0, 1024]]);
  });

  it('gives no range for no sector', () => {
    expect(sectorRuns([])).toEqual([]);
  });
});
