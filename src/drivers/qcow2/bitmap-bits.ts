// The bits of a persistent bitmap as qcow2 stores them (docs/interop/qcow2.txt, "Bitmaps"):
// bit i of the bitmap is bit i % 8 of byte i / 8 (QEMU serializes 64-bit words little-endian,
// which comes to the same), one data cluster per bitmap table entry.
import type { GranuleSet } from '../../node/granule-set.js';

/** Bits (granules) one data cluster holds. */
export function granulesPerCluster(clusterSize: number): number {
  return clusterSize * 8;
}

/** Adds the set bits of `bytes` to `granules`, bit 0 of byte 0 being granule `first` (bits past the set's size are ignored). */
export function addClusterBits(granules: GranuleSet, first: number, bytes: Uint8Array): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const words = bytes.byteLength >>> 2;
  // Runs of ones are added whole: a full cluster costs one add, not one per bit.
  let runStart = -1;
  for (let w = 0; w < words; w++) {
    const word = view.getUint32(w * 4, true);
    const base = first + w * 32;
    if (word === 0 || word === 0xffffffff) {
      if (word === 0 && runStart >= 0) {
        granules.add(runStart, base);
        runStart = -1;
      } else if (word !== 0 && runStart < 0) runStart = base;
      continue;
    }
    for (let bit = 0; bit < 32; bit++) {
      const on = (word >>> bit) & 1;
      if (on && runStart < 0) runStart = base + bit;
      else if (!on && runStart >= 0) {
        granules.add(runStart, base + bit);
        runStart = -1;
      }
    }
  }
  if (runStart >= 0) granules.add(runStart, first + words * 32);
}

/**
 * Writes the granules `[first, first + out.length × 8)` of `granules` into `out` as bits (all of
 * `out` is overwritten); returns whether any bit is set.
 */
export function clusterBits(granules: GranuleSet, first: number, out: Uint8Array): boolean {
  out.fill(0);
  const limit = first + out.length * 8;
  let any = false;
  for (const [a, b] of granules.runs(first, limit)) {
    any = true;
    setBits(out, a - first, b - first);
  }
  return any;
}

/** Sets bits `[lo, hi)` of `out`. */
function setBits(out: Uint8Array, lo: number, hi: number): void {
  while (lo < hi && (lo & 7) !== 0) {
    out[lo >>> 3]! |= 1 << (lo & 7);
    lo++;
  }
  if (lo + 8 <= hi) {
    out.fill(0xff, lo >>> 3, hi >>> 3);
    lo = hi & ~7;
  }
  while (lo < hi) {
    out[lo >>> 3]! |= 1 << (lo & 7);
    lo++;
  }
}
