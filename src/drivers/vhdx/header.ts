import { BlockError } from '../../errors.js';
import { checksumWithField } from './crc32c.js';
import * as L from './limits.js';

/** One of the two VHDX headers (the fields QEMU keeps; the 4 KiB around them are checksummed). */
export interface VhdxHeader {
  sequence: bigint;
  fileWriteGuid: Uint8Array;
  dataWriteGuid: Uint8Array;
  /** Non-zero: the log holds entries with this GUID that must be replayed. */
  logGuid: Uint8Array;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** A u64 field as a number; past 2^53 (no file is that large) it becomes Infinity, which every range check refuses. */
export function safeNumber(x: bigint): number {
  return x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : Number.POSITIVE_INFINITY;
}

/** The header in `block` (its 4 KiB), or undefined when its checksum, signature or version is wrong (QEMU: that copy is not valid). */
export function parseHeader(block: Uint8Array): VhdxHeader | undefined {
  if (block.length < L.HEADER_CRC_BYTES) return undefined;
  const v = view(block);
  if (v.getUint32(0, true) !== L.HEADER_SIGNATURE) return undefined;
  if (checksumWithField(block.subarray(0, L.HEADER_CRC_BYTES), 4) !== v.getUint32(4, true)) return undefined;
  if (v.getUint16(66, true) !== L.HEADER_VERSION) return undefined;
  return {
    sequence: v.getBigUint64(8, true),
    fileWriteGuid: block.slice(16, 32),
    dataWriteGuid: block.slice(32, 48),
    logGuid: block.slice(48, 64),
    logVersion: v.getUint16(64, true),
    version: v.getUint16(66, true),
    logLength: v.getUint32(68, true),
    logOffset: safeNumber(v.getBigUint64(72, true)),
  };
}

/** Which header is current: the valid one with the higher sequence number (QEMU vhdx_parse_header); equal numbers only if both are identical. */
export function pickHeader(block1: Uint8Array, block2: Uint8Array, nodeName: string): { header: VhdxHeader; index: 0 | 1 } {
  const h1 = parseHeader(block1);
  const h2 = parseHeader(block2);
  if (!h1 && !h2) throw new BlockError('ECORRUPT', 'vhdx: no valid VHDX header found (both headers fail their checksum, signature or version)', { node: nodeName, offset: L.HEADER1_OFFSET, field: 'header' });
  if (!h2) return { header: h1!, index: 0 };
  if (!h1) return { header: h2, index: 1 };
  if (h1.sequence > h2.sequence) return { header: h1, index: 0 };
  if (h2.sequence > h1.sequence) return { header: h2, index: 1 };
  // Some tools (Disk2VHD) write two identical headers; two different ones with one number are corrupt.
  const same = block1.subarray(0, L.HEADER_FIELD_BYTES).every((x, i) => x === block2[i]);
  if (!same) throw new BlockError('ECORRUPT', `vhdx: both headers have sequence number ${h1.sequence} but differ`, { node: nodeName, offset: L.HEADER2_OFFSET, field: 'sequence_number' });
  return { header: h1, index: 0 };
}

/** Checks the current header's log fields against the spec's limits (QEMU vhdx_parse_log). */
export function validateHeaderLog(h: VhdxHeader, fileLength: number, nodeName: string): void {
  const bad = (field: string, why: string, offset: number) => new BlockError('ECORRUPT', `vhdx: header ${field}: ${why}`, { node: nodeName, field, offset });
  if (!Number.isSafeInteger(h.logOffset) || h.logOffset < L.HEADER_SECTION_BYTES || h.logOffset % L.REGION_ALIGN !== 0) {
    throw bad('log_offset', `${h.logOffset} is not a multiple of 1 MiB past the header section`, L.HEADER1_OFFSET + 72);
  }
  if (h.logVersion !== L.LOG_VERSION) throw new BlockError('ENOTSUP', `vhdx: header log_version ${h.logVersion} is not supported (only ${L.LOG_VERSION})`, { node: nodeName, field: 'log_version' });
  if (h.logLength % L.REGION_ALIGN !== 0) throw bad('log_length', `${h.logLength} is not a multiple of 1 MiB`, L.HEADER1_OFFSET + 68);
  if (h.logLength > 0 && h.logOffset + h.logLength > fileLength) {
    throw bad('log_length', `the log (${h.logLength} bytes at ${h.logOffset}) ends past the end of the file (${fileLength} bytes)`, h.logOffset);
  }
}

/** The 4 KiB block of a header (zeros around the fields, checksum filled in). */
export function serializeHeader(h: VhdxHeader): Uint8Array {
  const b = new Uint8Array(L.HEADER_CRC_BYTES);
  const v = view(b);
  v.setUint32(0, L.HEADER_SIGNATURE, true);
  v.setBigUint64(8, h.sequence, true);
  b.set(h.fileWriteGuid, 16);
  b.set(h.dataWriteGuid, 32);
  b.set(h.logGuid, 48);
  v.setUint16(64, h.logVersion, true);
  v.setUint16(66, h.version, true);
  v.setUint32(68, h.logLength, true);
  v.setBigUint64(72, BigInt(h.logOffset), true);
  v.setUint32(4, checksumWithField(b, 4), true);
  return b;
}
