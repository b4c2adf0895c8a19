import { describe, expect, it } from 'vitest';
import { patternBytes } from '../helpers/pattern-bytes.js';
import { CHUNK, DiskModel, firstDifference } from '../helpers/qcow2-model.js';

describe('DiskModel (the memory model the qcow2 write tests judge against)', () => {
  it('reads back writes across chunk boundaries and zeros elsewhere', () => {
    const m = new DiskModel(4 * CHUNK);
    const data = patternBytes(7, CHUNK + 100);
    m.write(CHUNK - 50, data);
    expect(m.read(CHUNK - 50, data.length)).toEqual(data);
    expect(m.read(0, CHUNK - 50)).toEqual(Buffer.alloc(CHUNK - 50));
    expect(m.isZeroRange(3 * CHUNK, CHUNK)).toBe(true);
    expect(m.isZeroRange(0, CHUNK)).toBe(false);
  });

  it('writeZeroes and discard make ranges read zeros; clones are independent', () => {
    const m = DiskModel.from(Buffer.alloc(2 * CHUNK, 0xaa));
    const before = m.clone();
    m.writeZeroes(10, 20);
    m.discard(CHUNK, CHUNK);
    expect(m.read(0, 40)).toEqual(Buffer.concat([Buffer.alloc(10, 0xaa), Buffer.alloc(20), Buffer.alloc(10, 0xaa)]));
    expect(m.isZeroRange(CHUNK, CHUNK)).toBe(true);
    expect(before.read(10, 20)).toEqual(Buffer.alloc(20, 0xaa));
  });

  it('refuses ranges outside the disk', () => {
    expect(() => new DiskModel(100).write(90, Buffer.alloc(11))).toThrow(RangeError);
  });

  it('firstDifference names the first differing byte', async () => {
    const m = new DiskModel(3 * CHUNK);
    m.write(5, Buffer.from([1, 2, 3]));
    const same = m.read(0, m.size);
    expect(await firstDifference(m, (o, n) => same.subarray(o, o + n), CHUNK)).toBeNull();
    const other = Buffer.from(same);
    other[CHUNK + 9] = 0xff;
    expect(await firstDifference(m, (o, n) => other.subarray(o, o + n), CHUNK)).toMatch(/byte 65545 .*expected 0x0, got 0xff/);
  });

  it('patternBytes is deterministic per seed', () => {
    expect(patternBytes(1, 33)).toEqual(patternBytes(1, 33));
    expect(patternBytes(1, 33)).not.toEqual(patternBytes(2, 33));
  });
});
