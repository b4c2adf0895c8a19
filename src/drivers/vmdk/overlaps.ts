import { BlockError } from '../../errors.js';

/** A piece of metadata in an extent file: [start, end) bytes, what it is, and where it is named. */
export interface MetadataRange {
  start: number;
  end: number;
  what: string;
  /** Byte offset of the field or entry that names it. */
  at: number;
}

/**
 * Refuses metadata that overlaps other metadata (a grain table inside the header, the grain
 * directory or another grain table: a hostile image's loops and aliases). Pure; O(n log n).
 */
export function checkNoOverlaps(ranges: MetadataRange[], fileSize: number): void {
  for (const r of ranges) {
    if (r.end > fileSize) {
      throw new BlockError('ECORRUPT', `vmdk: the ${r.what} (named at byte ${r.at}, bytes ${r.start} to ${r.end}) is past the end of the file (${fileSize} bytes)`, {
        offset: r.at,
        field: r.what,
      });
    }
  }
  const sorted = ranges.filter((r) => r.end > r.start).sort((a, b) => a.start - b.start || a.end - b.end);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1];
    const b = sorted[i];
    if (b.start < a.end) {
      throw new BlockError('ECORRUPT', `vmdk: the ${b.what} (named at byte ${b.at}, bytes ${b.start} to ${b.end}) overlaps the ${a.what} (bytes ${a.start} to ${a.end})`, {
        offset: b.at,
        field: b.what,
      });
    }
  }
}

/** The grain tables a directory names, as metadata ranges (zero entries name none). */
export function grainTableRanges(dir: Uint32Array, dirOffset: number, gtBytes: number, what: string): MetadataRange[] {
  const out: MetadataRange[] = [];
  for (let i = 0; i < dir.length; i++) {
    if (dir[i] === 0) continue;
    const start = dir[i] * 512;
    out.push({ start, end: start + gtBytes, what: `${what} ${i}`, at: dirOffset + i * 4 });
  }
  return out;
}
