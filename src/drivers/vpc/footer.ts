import { BlockError } from '../../errors.js';
import * as L from './limits.js';

/** The VHD footer (hard disk footer), as stored big-endian in 512 bytes. */
export interface VhdFooter {
  features: number;
  version: number;
  /** Offset of the dynamic header; -1 (all ones) for a fixed image. */
  dataOffset: number;
  timestamp: number;
  /** Creator application, 4 characters ("qemu", "qem2", "win ", "vpc ", "d2v ", "tap\0", …). */
  creatorApp: string;
  creatorVersion: number;
  creatorOs: string;
  originalSize: number;
  currentSize: number;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
  checksum: number;
  uuid: Uint8Array;
  savedState: number;
}

/** One's complement of the byte sum, with the 4 checksum bytes at `skip` counted as zero. */
export function vhdChecksum(b: Uint8Array, skip: number): number {
  let sum = 0;
  for (let i = 0; i < b.length; i++) if (i < skip || i >= skip + 4) sum += b[i];
  return ~sum >>> 0;
}

export function hasCookie(b: Uint8Array, at: number, cookie: string): boolean {
  if (b.length < at + cookie.length) return false;
  for (let i = 0; i < cookie.length; i++) if (b[at + i] !== cookie.charCodeAt(i)) return false;
  return true;
}

const latin = (b: Uint8Array, at: number, n: number) => String.fromCharCode(...b.subarray(at, at + n));

/** Reads a 64-bit big-endian field as a number, or -1 when it does not fit in a safe integer. */
function u64(v: DataView, at: number): number {
  const x = v.getBigUint64(at);
  return x > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(x);
}

/**
 * Parses and checks a footer read at `at`. A wrong checksum is refused: QEMU 7.2's vpc_open fails
 * with "Incorrect header checksum" (older QEMU only printed a warning).
 */
export function parseFooter(b: Uint8Array, at: number): VhdFooter {
  if (b.length < L.FOOTER_SIZE || !hasCookie(b, 0, L.FOOTER_COOKIE)) {
    throw new BlockError('ECORRUPT', `vpc: no VHD footer cookie '${L.FOOTER_COOKIE}' at offset ${at}`, { field: 'cookie', offset: at });
  }
  const v = new DataView(b.buffer, b.byteOffset, L.FOOTER_SIZE);
  const f: VhdFooter = {
    features: v.getUint32(8),
    version: v.getUint32(12),
    dataOffset: u64(v, 16),
    timestamp: v.getUint32(24),
    creatorApp: latin(b, 28, 4),
    creatorVersion: v.getUint32(32),
    creatorOs: latin(b, 36, 4),
    originalSize: u64(v, 40),
    currentSize: u64(v, 48),
    cylinders: v.getUint16(56),
    heads: b[58],
    sectorsPerTrack: b[59],
    diskType: v.getUint32(60),
    checksum: v.getUint32(64),
    uuid: b.slice(68, 84),
    savedState: b[84],
  };
  const want = vhdChecksum(b.subarray(0, L.FOOTER_SIZE), 64);
  if (f.checksum !== want) {
    throw new BlockError('ECORRUPT', `vpc: footer checksum at offset ${at + 64} is 0x${f.checksum.toString(16)}, the footer sums to 0x${want.toString(16)}`, {
      field: 'checksum',
      offset: at + 64,
    });
  }
  if (f.diskType !== L.DISK_FIXED && f.diskType !== L.DISK_DYNAMIC && f.diskType !== L.DISK_DIFFERENCING) {
    throw new BlockError('ENOTSUP', `vpc: disk type ${f.diskType} at offset ${at + 60} is none of fixed (2), dynamic (3), differencing (4)`, { field: 'disk_type', offset: at + 60 });
  }
  if (f.currentSize < 0) throw new BlockError('ECORRUPT', `vpc: current size at offset ${at + 48} is beyond 2^53`, { field: 'current_size', offset: at + 48 });
  return f;
}

/** The 512 bytes of a footer, its checksum computed. */
export function encodeFooter(f: Omit<VhdFooter, 'checksum'>): Uint8Array {
  const b = new Uint8Array(L.FOOTER_SIZE);
  const v = new DataView(b.buffer);
  for (let i = 0; i < 8; i++) b[i] = L.FOOTER_COOKIE.charCodeAt(i);
  v.setUint32(8, f.features);
  v.setUint32(12, f.version);
  v.setBigUint64(16, f.dataOffset < 0 ? L.NO_DATA_OFFSET : BigInt(f.dataOffset));
  v.setUint32(24, f.timestamp);
  for (let i = 0; i < 4; i++) b[28 + i] = f.creatorApp.charCodeAt(i) || 0;
  v.setUint32(32, f.creatorVersion);
  for (let i = 0; i < 4; i++) b[36 + i] = f.creatorOs.charCodeAt(i) || 0;
  v.setBigUint64(40, BigInt(f.originalSize));
  v.setBigUint64(48, BigInt(f.currentSize));
  v.setUint16(56, f.cylinders);
  b[58] = f.heads;
  b[59] = f.sectorsPerTrack;
  v.setUint32(60, f.diskType);
  b.set(f.uuid.subarray(0, 16), 68);
  b[84] = f.savedState;
  v.setUint32(64, vhdChecksum(b, 64));
  return b;
}
