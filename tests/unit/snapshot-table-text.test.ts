import { describe, expect, it } from 'vitest';
import { qemuSizeText, snapshotRow, snapshotTable } from '../../src/cli/snapshot.js';

describe("qemu-img snapshot -l's text", () => {
  it("sizes as QEMU's size_to_str: three significant digits, the unit stepping up at 1000 of the one below", () => {
    expect(qemuSizeText(0)).toBe('0 B');
    expect(qemuSizeText(999)).toBe('999 B');
    expect(qemuSizeText(1000)).toBe('0.977 KiB');
    expect(qemuSizeText(1536)).toBe('1.5 KiB');
    expect(qemuSizeText(10 * 2 ** 20)).toBe('10 MiB');
    expect(qemuSizeText(123456789)).toBe('118 MiB');
  });

  it('a row: id and tag padded, vm clock as HH:MM:SS.mmm, icount blank when unknown; no table without snapshots', () => {
    const row = snapshotRow({ id: '12', name: 'tag', size: 0, date: { sec: 0, nsec: 0 }, vmClockNs: 3723_004_000_000, vmStateSize: 1536, icount: -1 });
    expect(row.slice(0, 27)).toBe('12        tag              ');
    expect(row.slice(27, 35)).toBe(' 1.5 KiB');
    expect(row.slice(55)).toBe(' 01:02:03.004           ');
    expect(snapshotTable([])).toEqual([]);
  });
});
