// CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries. A table-driven
// function of our own (slicing by 8): the npm packages for it pull in the AWS SDK's types and tslib
// for 20 lines.

/** TABLES[k][n]: the register after byte n followed by k zero bytes. */
const TABLES = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[0][n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) for (let k = 1; k < 8; k++) t[k][n] = (t[k - 1][n] >>> 8) ^ t[0][t[k - 1][n] & 0xff];
  return t;
})();
const [T0, T1, T2, T3, T4, T5, T6, T7] = TABLES;

/** Continues a CRC-32C register over `data[start..end)` (start with {@link CRC_START}, finish with {@link crcFinish}). */
export function crcUpdate(register: number, data: Uint8Array, start = 0, end = data.length): number {
  let c = register >>> 0;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    c ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    c = T7[c & 0xff] ^ T6[(c >>> 8) & 0xff] ^ T5[(c >>> 16) & 0xff] ^ T4[c >>> 24] ^ T3[data[i + 4]] ^ T2[data[i + 5]] ^ T1[data[i + 6]] ^ T0[data[i + 7]];
  }
  for (; i < end; i++) c = T0[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return c >>> 0;
}

export const CRC_START = 0xffffffff;

export function crcFinish(register: number): number {
  return (register ^ 0xffffffff) >>> 0;
}

const ZERO4 = new Uint8Array(4);

/** CRC-32C of `data` with its 4-byte checksum field at `fieldOffset` taken as zero (how VHDX checksums itself). */
export function checksumWithField(data: Uint8Array, fieldOffset: number): number {
  let c = crcUpdate(CRC_START, data, 0, fieldOffset);
  c = crcUpdate(c, ZERO4);
  c = crcUpdate(c, data, fieldOffset + 4);
  return crcFinish(c);
}

/** Plain CRC-32C of `data`. */
export function crc32c(data: Uint8Array): number {
  return crcFinish(crcUpdate(CRC_START, data));
}
