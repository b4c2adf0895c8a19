/**
 * Refcount entries inside one refcount block (docs/interop/qcow2.txt): `2^order` bits each,
 * big-endian from 8 bits up; below 8 bits, entry 0 sits in the least significant bits of byte 0.
 * 64-bit entries are kept at most 2^53 (the largest count a JS number holds exactly).
 */

/** Number of refcount entries in one block of `clusterSize` bytes. */
export function entriesPerBlock(clusterSize: number, order: number): number {
  return (clusterSize * 8) / 2 ** order;
}

/** Largest refcount an entry of `2^order` bits can hold (capped at 2^53 - 1 for 64 bits). */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** 2 ** order - 1;
}

/** The refcount at `index` of `block`. */
export function readRefcount(block: Uint8Array, index: number, order: number): number {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const bit = index * bits;
      return (block[bit >>> 3] >>> (bit & 7)) & ((1 << bits) - 1);
    }
    case 3:
      return block[index];
    case 4:
      return (block[index * 2] << 8) | block[index * 2 + 1];
    case 5: {
      const at = index * 4;
      return ((block[at] << 24) | (block[at + 1] << 16) | (block[at + 2] << 8) | block[at + 3]) >>> 0;
    }
    default: {
      const at = index * 8;
      const hi = ((block[at] << 24) | (block[at + 1] << 16) | (block[at + 2] << 8) | block[at + 3]) >>> 0;
      const lo = ((block[at + 4] << 24) | (block[at + 5] << 16) | (block[at + 6] << 8) | block[at + 7]) >>> 0;
      // Beyond 2^53 the count is not exact: report the cap, which is never 0 or 1 (what decisions need).
      return hi > 0x1fffff ? Number.MAX_SAFE_INTEGER : hi * 2 ** 32 + lo;
    }
  }
}

/** Stores `value` (0..maxRefcount(order)) at `index` of `block`. */
export function writeRefcount(block: Uint8Array, index: number, order: number, value: number): void {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const bit = index * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      const at = bit >>> 3;
      block[at] = (block[at] & ~mask) | ((value << (bit & 7)) & mask);
      return;
    }
    case 3:
      block[index] = value;
      return;
    case 4:
      block[index * 2] = value >>> 8;
      block[index * 2 + 1] = value & 0xff;
      return;
    case 5: {
      const at = index * 4;
      block[at] = value >>> 24;
      block[at + 1] = (value >>> 16) & 0xff;
      block[at + 2] = (value >>> 8) & 0xff;
      block[at + 3] = value & 0xff;
      return;
    }
    default: {
      const at = index * 8;
      const hi = Math.floor(value / 2 ** 32);
      const lo = value >>> 0;
      block[at] = hi >>> 24;
      block[at + 1] = (hi >>> 16) & 0xff;
      block[at + 2] = (hi >>> 8) & 0xff;
      block[at + 3] = hi & 0xff;
      block[at + 4] = lo >>> 24;
      block[at + 5] = (lo >>> 16) & 0xff;
      block[at + 6] = (lo >>> 8) & 0xff;
      block[at + 7] = lo & 0xff;
    }
  }
}
