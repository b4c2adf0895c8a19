import { BlockError } from '../../errors.js';
import { hasCookie, vhdChecksum } from './footer.js';
import * as L from './limits.js';

/** One parent locator entry of a differencing image's dynamic header. */
export interface ParentLocator {
  /** Platform code as 4 characters: 'W2ku', 'W2ru', 'Mac ', 'MacX', … */
  platform: string;
  /** Bytes of locator data (Windows writes bytes here; the specification's sectors are in dataSpace). */
  dataLength: number;
  /** Where the locator data is in the file. */
  dataOffset: number;
}

/** The dynamic disk header of a dynamic or differencing image. */
export interface DynamicHeader {
  tableOffset: number;
  version: number;
  maxTableEntries: number;
  blockSize: number;
  /** Bytes of the sector bitmap in front of each block, whole sectors. */
  bitmapSize: number;
  parentUuid: Uint8Array;
  parentTimestamp: number;
  /** The parent's file name (UTF-16 big-endian in the header), '' when none. */
  parentName: string;
  /** Locators in use (platform code not zero). */
  locators: ParentLocator[];
}

const corrupt = (message: string, field: string, offset: number) => new BlockError('ECORRUPT', `vpc: ${message}`, { field, offset });

/** UTF-16 of `b` (`le` little-endian) up to the first NUL. */
export function decodeUtf16(b: Uint8Array, le: boolean): string {
  let s = '';
  for (let i = 0; i + 1 < b.length; i += 2) {
    const u = le ? b[i] | (b[i + 1] << 8) : (b[i] << 8) | b[i + 1];
    if (u === 0) break;
    s += String.fromCharCode(u);
  }
  return s;
}

/** `s` as UTF-16 (`le` little-endian), without a terminator. */
export function encodeUtf16(s: string, le: boolean): Uint8Array {
  const b = new Uint8Array(s.length * 2);
  for (let i = 0; i < s.length; i++) {
    const u = s.charCodeAt(i);
    b[2 * i + (le ? 0 : 1)] = u & 0xff;
    b[2 * i + (le ? 1 : 0)] = u >> 8;
  }
  return b;
}

/**
 * Parses the dynamic header read at `at` and checks every field against `fileSize`, where the
 * metadata must end (the footer's offset): cookie, checksum (QEMU 7.2 does not verify this one; a wrong sum means the
 * header cannot be trusted, so we refuse it), block size, table bounds and locators.
 */
export function parseDynamicHeader(b: Uint8Array, at: number, fileSize: number): DynamicHeader {
  if (b.length < L.DYNAMIC_HEADER_SIZE || !hasCookie(b, 0, L.DYNAMIC_COOKIE)) {
    throw corrupt(`no dynamic header cookie '${L.DYNAMIC_COOKIE}' at offset ${at}`, 'cookie', at);
  }
  const v = new DataView(b.buffer, b.byteOffset, L.DYNAMIC_HEADER_SIZE);
  const checksum = v.getUint32(36);
  const want = vhdChecksum(b.subarray(0, L.DYNAMIC_HEADER_SIZE), 36);
  if (checksum !== want) throw corrupt(`dynamic header checksum at offset ${at + 36} is 0x${checksum.toString(16)}, the header sums to 0x${want.toString(16)}`, 'checksum', at + 36);
  const table = v.getBigUint64(16);
  const maxTableEntries = v.getUint32(28);
  const blockSize = v.getUint32(32);
  if (blockSize < L.MIN_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw corrupt(`block size ${blockSize} at offset ${at + 32} is not a power of two of at least ${L.MIN_BLOCK_SIZE}`, 'block_size', at + 32);
  }
  if (maxTableEntries * 4 > L.MAX_BAT_BYTES) {
    throw new BlockError('ENOTSUP', `vpc: ${maxTableEntries} BAT entries at offset ${at + 28} exceed the limit of ${L.MAX_BAT_BYTES / 4}`, { field: 'max_table_entries', offset: at + 28 });
  }
  if (table > BigInt(fileSize) || Number(table) + maxTableEntries * 4 > fileSize) {
    throw corrupt(`BAT at offset ${table} (${maxTableEntries} entries, field at offset ${at + 16}) ends beyond ${fileSize}, where the footer is`, 'table_offset', at + 16);
  }
  const tableOffset = Number(table);
  if ((tableOffset < at + L.DYNAMIC_HEADER_SIZE && tableOffset + maxTableEntries * 4 > at) || tableOffset < L.FOOTER_SIZE) {
    throw corrupt(`BAT at offset ${tableOffset} overlaps the dynamic header at ${at} or the footer copy at 0`, 'table_offset', at + 16);
  }
  const locators: ParentLocator[] = [];
  for (let i = 0; i < L.PARENT_LOCATORS; i++) {
    const e = 576 + 24 * i;
    const code = v.getUint32(e);
    if (code === 0) continue;
    const dataLength = v.getUint32(e + 8);
    const offset = v.getBigUint64(e + 16);
    if (dataLength > L.MAX_LOCATOR_BYTES) {
      throw corrupt(`parent locator ${i} at offset ${at + e} is ${dataLength} bytes long, more than ${L.MAX_LOCATOR_BYTES}`, 'parent_locator.data_length', at + e + 8);
    }
    if (offset > BigInt(fileSize) || Number(offset) + dataLength > fileSize) {
      throw corrupt(`parent locator ${i} data at offset ${offset} (+${dataLength}) ends beyond ${fileSize}, where the footer is`, 'parent_locator.data_offset', at + e + 16);
    }
    locators.push({ platform: String.fromCharCode(b[e], b[e + 1], b[e + 2], b[e + 3]), dataLength, dataOffset: Number(offset) });
  }
  return {
    tableOffset,
    version: v.getUint32(24),
    maxTableEntries,
    blockSize,
    bitmapSize: Math.ceil(blockSize / L.SECTOR_SIZE / 8 / L.SECTOR_SIZE) * L.SECTOR_SIZE,
    parentUuid: b.slice(40, 56),
    parentTimestamp: v.getUint32(56),
    parentName: decodeUtf16(b.subarray(64, 576), false),
    locators,
  };
}

/** A new dynamic header (no parent) with its checksum: the BAT at `tableOffset`. */
export function encodeDynamicHeader(tableOffset: number, maxTableEntries: number, blockSize: number): Uint8Array {
  const b = new Uint8Array(L.DYNAMIC_HEADER_SIZE);
  const v = new DataView(b.buffer);
  for (let i = 0; i < 8; i++) b[i] = L.DYNAMIC_COOKIE.charCodeAt(i);
  v.setBigUint64(8, L.NO_DATA_OFFSET);
  v.setBigUint64(16, BigInt(tableOffset));
  v.setUint32(24, 0x00010000);
  v.setUint32(28, maxTableEntries);
  v.setUint32(32, blockSize);
  v.setUint32(36, vhdChecksum(b, 36));
  return b;
}
