import { BlockError } from '../../errors.js';
import { BITMAP_ALL_ONES, BITMAP_TABLE_RESERVED_HI, BITMAP_TABLE_RESERVED_LO, entryOffset } from './entries.js';
import { cString, type Qcow2Header } from './header.js';
import * as L from './limits.js';

/** One persistent dirty bitmap, as listed in the bitmap directory. */
export interface Qcow2Bitmap {
  name: string;
  /** Bytes of guest data one bit covers. */
  granularity: number;
  /** Flags: 1 in use (inconsistent), 2 auto. */
  flags: number;
}

/** A directory entry as stored: where its table is, and whether QEMU would load it. */
export interface Qcow2BitmapEntry extends Qcow2Bitmap {
  granularityBits: number;
  tableOffset: number;
  tableSize: number;
  /** An in-use entry with the name of an earlier one: never loaded, kept in the directory as it is (QEMU). */
  shadowed: boolean;
  /** The name's bytes as stored (up to a NUL) when they are not `name` in UTF-8: written back as they are (QEMU's names are bytes). */
  nameBytes?: Uint8Array;
}

type Reader = (offset: number, length: number) => Promise<Uint8Array>;

const corrupt = (field: string, offset: number, message: string) =>
  new BlockError('ECORRUPT', `qcow2 bitmap directory: ${field} ${message} (at byte ${offset})`, { field, offset });


/** Clusters a bitmap's table must have for a disk of `size` bytes (QEMU serializes the bits in 64-bit words). */
export function bitmapTableClusters(size: number, granularityBits: number, clusterSize: number): number {
  const bits = Math.ceil(size / 2 ** granularityBits);
  const bytes = Math.ceil(bits / 64) * 8;
  return Math.ceil(bytes / clusterSize);
}

/**
 * Reads and checks the persistent bitmaps as QEMU does when it opens an image whose bitmaps
 * autoclear bit is set (qcow2_load_dirty_bitmaps): the directory's entries and their count,
 * each entry's constraints, each bitmap table's entries and size, duplicate names. Any failure
 * refuses the image, as it does in QEMU. Bytes past the end of the file read as zeros.
 */
export async function readBitmaps(h: Qcow2Header, read: Reader): Promise<Qcow2Bitmap[]> {
  return (await readBitmapDirectory(h, read)).filter((b) => !b.shadowed);
}

/** Every entry of the bitmap directory, checked as {@link readBitmaps} checks them, shadowed ones included. */
export async function readBitmapDirectory(h: Qcow2Header, read: Reader): Promise<Qcow2BitmapEntry[]> {
  const ext = h.bitmaps;
  if (!ext) return [];
  const dir = Buffer.from(await read(ext.directoryOffset, ext.directorySize));
  const entries: (DirEntry & { name: string; nameBytes?: Uint8Array; at: number })[] = [];
  for (let e = 0; e < dir.length; ) {
    const at = ext.directoryOffset + e;
    if (e + L.BITMAP_ENTRY_BYTES > dir.length) throw corrupt('entry', at, 'runs past the end of the directory');
    if (entries.length + 1 > ext.count) throw corrupt('entry', at, `is one more than the ${ext.count} bitmaps the header extension announces`);
    const d: DirEntry = {
      tableOffset: dir.readUInt32BE(e) * 2 ** 32 + dir.readUInt32BE(e + 4),
      tableOffsetLow: dir.readUInt32BE(e + 4),
      tableSize: dir.readUInt32BE(e + 8),
      flags: dir.readUInt32BE(e + 12),
      type: dir[e + 16],
      granularityBits: dir[e + 17],
      nameSize: dir.readUInt16BE(e + 18),
    };
    const extraSize = dir.readUInt32BE(e + 20);
    const next = e + Math.ceil((L.BITMAP_ENTRY_BYTES + extraSize + d.nameSize) / 8) * 8;
    if (next > dir.length) throw corrupt('entry', at, 'runs past the end of the directory');
    if (extraSize !== 0) {
      throw new BlockError('ENOTSUP', `qcow2 bitmap directory: extra data in bitmap entries is not supported (at byte ${at + 20})`, { field: 'extra_data_size', offset: at + 20 });
    }
    const name = cString(dir, e + L.BITMAP_ENTRY_BYTES, d.nameSize);
    const stored = dir.subarray(e + L.BITMAP_ENTRY_BYTES, e + L.BITMAP_ENTRY_BYTES + d.nameSize);
    const nul = stored.indexOf(0);
    const raw = nul === -1 ? stored : stored.subarray(0, nul);
    const why = entryProblem(h, d);
    if (why) throw corrupt(`bitmap '${name}'`, at, why);
    entries.push({ ...d, name, ...(Buffer.from(name).equals(raw) ? {} : { nameBytes: Buffer.from(raw) }), at });
    e = next;
  }
  if (entries.length !== ext.count) {
    throw corrupt('entries', ext.directoryOffset, `are ${entries.length}, fewer than the ${ext.count} bitmaps the header extension announces`);
  }

  // Then each bitmap is loaded as QEMU loads it: its table entries, its name, its table size.
  const out: Qcow2BitmapEntry[] = [];
  const seen = new Set<string>();
  const entry = (d: DirEntry & { name: string; nameBytes?: Uint8Array }, shadowed: boolean): Qcow2BitmapEntry => ({
    name: d.name,
    ...(d.nameBytes ? { nameBytes: d.nameBytes } : {}),
    granularity: 2 ** d.granularityBits,
    flags: d.flags,
    granularityBits: d.granularityBits,
    tableOffset: d.tableOffset,
    tableSize: d.tableSize,
    shadowed,
  });
  for (const d of entries) {
    // An in-use bitmap whose name is already loaded is skipped, as QEMU does.
    if (d.flags & L.BITMAP_FLAG_IN_USE && seen.has(d.name)) {
      out.push(entry(d, true));
      continue;
    }
    const what = `table entry of bitmap '${d.name}'`;
    const table = Buffer.from(await read(d.tableOffset, d.tableSize * 8));
    for (let i = 0; i < d.tableSize; i++) {
      const hi = table.readUInt32BE(i * 8);
      const lo = table.readUInt32BE(i * 8 + 4);
      const where = d.tableOffset + i * 8;
      if (hi & BITMAP_TABLE_RESERVED_HI || lo & BITMAP_TABLE_RESERVED_LO) throw corrupt(what, where, 'has reserved bits set');
      const offset = entryOffset(hi, lo);
      if (offset !== 0 && lo & BITMAP_ALL_ONES) throw corrupt(what, where, 'has both a data offset and the all-ones flag');
      if (offset % h.clusterSize !== 0) throw corrupt(what, where, `points to an unaligned cluster at ${offset}`);
    }
    if (seen.has(d.name)) throw corrupt(`bitmap '${d.name}'`, d.at, 'has the name of an earlier bitmap');
    seen.add(d.name);
    const need = bitmapTableClusters(h.size, d.granularityBits, h.clusterSize);
    if (d.tableSize !== need) throw corrupt(`bitmap '${d.name}'`, d.at + 8, `table has ${d.tableSize} entries; a disk of ${h.size} bytes needs ${need}`);
    out.push(entry(d, false));
  }
  return out;
}

/** The fields of a directory entry that QEMU's constraints look at. */
interface DirEntry {
  tableOffset: number;
  /** Low 32 bits of the offset: alignment is exact from them even for offsets beyond 2^53. */
  tableOffsetLow: number;
  tableSize: number;
  flags: number;
  type: number;
  granularityBits: number;
  nameSize: number;
}

/** Why a directory entry breaks QEMU's constraints (check_dir_entry), or undefined. */
function entryProblem(h: Qcow2Header, d: DirEntry): string | undefined {
  if (d.tableSize === 0) return 'has an empty bitmap table';
  if (d.tableOffset === 0 || d.tableOffsetLow % h.clusterSize !== 0) return `has its table at ${d.tableOffset}, not a cluster-aligned offset`;
  if (d.tableSize > L.MAX_BITMAP_TABLE_ENTRIES) return `table of ${d.tableSize} entries is above ${L.MAX_BITMAP_TABLE_ENTRIES}`;
  if (d.granularityBits < L.MIN_BITMAP_GRANULARITY_BITS || d.granularityBits > L.MAX_BITMAP_GRANULARITY_BITS) {
    return `granularity bits ${d.granularityBits} are outside ${L.MIN_BITMAP_GRANULARITY_BITS}..${L.MAX_BITMAP_GRANULARITY_BITS}`;
  }
  if (d.flags & ~L.BITMAP_KNOWN_FLAGS) return `has reserved flags set (${d.flags})`;
  if (d.nameSize > L.MAX_BITMAP_NAME) return `name of ${d.nameSize} bytes is longer than ${L.MAX_BITMAP_NAME}`;
  if (d.type !== L.BITMAP_TYPE_DIRTY_TRACKING) return `type ${d.type} is not 1 (dirty tracking)`;
  const phys = d.tableSize * h.clusterSize;
  if (phys > L.MAX_BITMAP_PHYS_BYTES) return `table covers ${phys} bytes, above ${L.MAX_BITMAP_PHYS_BYTES}`;
  if (h.size > phys * 8 * 2 ** d.granularityBits) return `table is too small for a disk of ${h.size} bytes`;
  return undefined;
}
