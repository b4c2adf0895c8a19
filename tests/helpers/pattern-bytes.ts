// Test data that is cheap to make and to remake, and does not compress.

/** Deterministic bytes from a seed (xorshift32): test data that is cheap to make and to remake. */
export function patternBytes(seed: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = (seed | 0) ^ 0x9e3779b9 || 1;
  let i = 0;
  for (; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeInt32LE(x | 0, i);
  }
  for (; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}
