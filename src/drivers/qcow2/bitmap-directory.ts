// Writing the bitmap directory and the bitmaps header extension (docs/interop/qcow2.txt,
// "Bitmaps extension" and "Bitmap directory"), as QEMU's qcow2-bitmap.c lays them out.
import { BlockError } from '../../errors.js';
import type { Qcow2BitmapEntry } from './bitmaps.js';
import * as L from './limits.js';

/** Entry flag: the bitmap records writes (QEMU BME_FLAG_AUTO). */
export const BITMAP_FLAG_AUTO = 2;

/** Bytes one directory entry takes: the fixed part and the name, padded to 8 (no extra data). */
export function directoryEntryBytes(name: string): number {
  return entryBytes(Buffer.byteLength(name));
}

const entryBytes = (nameBytes: number) => Math.ceil((L.BITMAP_ENTRY_BYTES + nameBytes) / 8) * 8;

/** The directory of `entries`, ready to be written. */
export function encodeDirectory(entries: readonly Qcow2BitmapEntry[]): Buffer {
  const names = entries.map((e) => e.nameBytes ?? Buffer.from(e.name));
  const out = Buffer.alloc(names.reduce((n, name) => n + entryBytes(name.length), 0));
  let at = 0;
  entries.forEach((e, i) => {
    out.writeUInt32BE(Math.floor(e.tableOffset / 2 ** 32), at);
    out.writeUInt32BE(e.tableOffset >>> 0, at + 4);
    out.writeUInt32BE(e.tableSize, at + 8);
    out.writeUInt32BE(e.flags, at + 12);
    out[at + 16] = L.BITMAP_TYPE_DIRTY_TRACKING;
    out[at + 17] = e.granularityBits;
    const name = names[i];
    out.writeUInt16BE(name.length, at + 18);
    out.writeUInt32BE(0, at + 20);
    out.set(name, at + L.BITMAP_ENTRY_BYTES);
    at += entryBytes(name.length);
  });
  return out;
}

/** Where the directory is: the bitmaps extension's data. */
export interface BitmapsExtension {
  count: number;
  directoryOffset: number;
  directorySize: number;
}

/**
 * The header cluster `header` with its bitmaps extension replaced by `ext` (or removed, when
 * undefined) and the bitmaps autoclear bit set accordingly; the other extensions keep their
 * order, the backing file name moves to follow the end marker. `headerLength` is the v3 header's.
 */
export function withBitmapsExtension(header: Uint8Array, headerLength: number, ext: BitmapsExtension | undefined): Buffer {
  const v = Buffer.from(header);
  const cs = v.length;
  const kept: { type: number; data: Buffer }[] = [];
  let bitmapsAt = -1;
  for (let at = headerLength; at + 8 <= cs; ) {
    const type = v.readUInt32BE(at);
    const len = v.readUInt32BE(at + 4);
    if (type === L.EXT_END || at + 8 + len > cs) break;
    if (type === L.EXT_BITMAPS) bitmapsAt = kept.length;
    else kept.push({ type, data: Buffer.from(v.subarray(at + 8, at + 8 + len)) });
    at += 8 + Math.ceil(len / 8) * 8;
  }
  if (ext) {
    const data = Buffer.alloc(L.BITMAPS_EXT_BYTES);
    data.writeUInt32BE(ext.count, 0);
    data.writeBigUInt64BE(BigInt(ext.directorySize), 8);
    data.writeBigUInt64BE(BigInt(ext.directoryOffset), 16);
    kept.splice(bitmapsAt < 0 ? kept.length : bitmapsAt, 0, { type: L.EXT_BITMAPS, data });
  }
  const backingOffset = Number(v.readBigUInt64BE(8));
  const backingName = backingOffset > 0 ? Buffer.from(v.subarray(backingOffset, backingOffset + v.readUInt32BE(16))) : undefined;

  const out = Buffer.alloc(cs);
  v.copy(out, 0, 0, headerLength);
  let at = headerLength;
  const tooBig = () => new BlockError('ENOSPC', `qcow2: the header extensions do not fit in the header cluster of ${cs} bytes`, { field: 'bitmaps' });
  for (const e of [...kept, { type: L.EXT_END, data: Buffer.alloc(0) }]) {
    if (at + 8 + e.data.length > cs) throw tooBig();
    out.writeUInt32BE(e.type, at);
    out.writeUInt32BE(e.data.length, at + 4);
    e.data.copy(out, at + 8);
    at += 8 + Math.ceil(e.data.length / 8) * 8;
  }
  if (backingName) {
    if (at + backingName.length > cs) throw tooBig();
    backingName.copy(out, at);
    out.writeBigUInt64BE(BigInt(at), 8);
  }
  const autoclearLow = out.readUInt32BE(92);
  out.writeUInt32BE((ext ? autoclearLow | L.AUTOCLEAR_BITMAPS : autoclearLow & ~L.AUTOCLEAR_BITMAPS) >>> 0, 92);
  return out;
}
