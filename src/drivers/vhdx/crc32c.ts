// CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries. A table-driven
// function of our own: the npm packages for it pull in the AWS SDK's types and tslib for 20 lines.

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Continues a CRC-32C register over `data` (start with {@link CRC_START}, finish with {@link crcFinish}). */
export function crcUpdate(register: number, data: Uint8Array, start = 0, end = data.length): number {
  let c = register;
  for (let i = start; i < end; i++) c = TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return c >>> 0;
}

export const CRC_START = 0xffffffff;

export function crcFinish(register: number): number {
  return (register ^ 0xffffffff) >>> 0;
}

/** CRC-32C of `data` with its 4-byte checksum field at `fieldOffset` taken as zero (how VHDX checksums itself). */
export function checksumWithField(data: Uint8Array, fieldOffset: number): number {
  let c = crcUpdate(CRC_START, data, 0, fieldOffset);
  c = crcUpdate(c, ZERO4);
  c = crcUpdate(c, data, fieldOffset + 4);
  return crcFinish(c);
}

const ZERO4 = new Uint8Array(4);

/** Plain CRC-32C of `data`. */
export function crc32c(data: Uint8Array): number {
  return crcFinish(crcUpdate(CRC_START, data));
}
