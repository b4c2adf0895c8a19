// Builds VHDX log entries from the specification (section 2.3), for tests: no tool here writes a
// dirty log, so the tests make one and let qemu-img and our driver replay it.
import { checksumWithField } from '../../src/drivers/vhdx/crc32c.js';

const SECTOR = 4096;

/** One change an entry makes: 4 KiB of `data` at `fileOffset`, or `zeroLength` zero bytes there. */
export type LogChange = { fileOffset: number; data: Uint8Array } | { fileOffset: number; zeroLength: number };

export interface LogEntryInput {
  sequence: bigint;
  logGuid: Uint8Array;
  changes: LogChange[];
  flushedFileOffset: number;
  lastFileOffset: number;
  /** Byte offset in the log of the sequence's first entry. */
  tail?: number;
}

/** The bytes of one log entry: header and descriptors, then one data sector per data descriptor. */
export function buildLogEntry(e: LogEntryInput): Uint8Array {
  const count = e.changes.length;
  const descSectors = Math.ceil((count + 2) / 128);
  const dataCount = e.changes.filter((c) => 'data' in c).length;
  const length = (descSectors + dataCount) * SECTOR;
  const b = new Uint8Array(length);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x65676f6c, true); // "loge"
  v.setUint32(8, length, true);
  v.setUint32(12, e.tail ?? 0, true);
  v.setBigUint64(16, e.sequence, true);
  v.setUint32(24, count, true);
  b.set(e.logGuid, 32);
  v.setBigUint64(48, BigInt(e.flushedFileOffset), true);
  v.setBigUint64(56, BigInt(e.lastFileOffset), true);
  let dataSector = descSectors;
  e.changes.forEach((c, i) => {
    const d = 64 + i * 32;
    v.setBigUint64(d + 16, BigInt(c.fileOffset), true);
    v.setBigUint64(d + 24, e.sequence, true);
    if ('zeroLength' in c) {
      v.setUint32(d, 0x6f72657a, true); // "zero"
      v.setBigUint64(d + 8, BigInt(c.zeroLength), true);
      return;
    }
    v.setUint32(d, 0x63736564, true); // "desc"
    b.set(c.data.subarray(0, 8), d + 8); // leading bytes
    b.set(c.data.subarray(4092, 4096), d + 4); // trailing bytes
    const s = dataSector++ * SECTOR;
    v.setUint32(s, 0x61746164, true); // "data"
    v.setUint32(s + 4, Number(e.sequence >> 32n), true);
    b.set(c.data.subarray(8, 4092), s + 8);
    v.setUint32(s + 4092, Number(e.sequence & 0xffffffffn), true);
  });
  v.setUint32(4, checksumWithField(b, 4), true);
  return b;
}
