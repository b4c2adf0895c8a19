import { bigEntryOffset, copiedEntry, l2EntryBytes } from './entries.js';
import * as L from './limits.js';
import { BlockError } from '../../errors.js';
import { Qcow2FileModel } from './create-allocator.js';
import { buildHeaderCluster } from './create-header.js';

/** Options after validation, with qemu-img's defaults filled in. */
export interface Qcow2CreateSettings {
  size: number;
  version: 2 | 3;
  clusterBits: number;
  refcountOrder: number;
  extendedL2: boolean;
  compressionType: 'zlib' | 'zstd';
  lazyRefcounts: boolean;
  dataFile?: string;
  dataFileRaw: boolean;
  backing?: string;
  backingFormat?: 'qcow2' | 'raw';
  preallocation: 'off' | 'metadata' | 'falloc' | 'full';
}

/** Largest request QEMU's preallocation loop hands to the allocator at once (INT_MAX, cluster aligned). */
const INT_MAX = 2 ** 31 - 1;

/** Everything to put on storage for a new qcow2 image. */
export interface Qcow2Plan {
  clusterSize: number;
  /** Length of the image file. */
  fileLength: number;
  /** Metadata to write (all other bytes below fileLength read as zeros). */
  writes: { offset: number; data: Uint8Array }[];
  /** Host range of the image file that falloc/full preallocation covers (space reserved or zeros written). */
  preallocate?: { start: number; end: number };
  /** Length of the external data file (the virtual size), when there is one. */
  dataFileLength?: number;
}

/**
 * Lays out a new qcow2 image the way qemu-img create does: header, refcount table and first
 * refcount block in clusters 0-2, then the L1 table, then (with preallocation) L2 tables and
 * data clusters, all placed by a model of QEMU's allocator.
 */
export function planQcow2(s: Qcow2CreateSettings): Qcow2Plan {
  const cs = 2 ** s.clusterBits;
  const l2EntrySize = l2EntryBytes(s.extendedL2);
  const l2Entries = cs / l2EntrySize;
  const l1Size = Math.ceil(s.size / (cs * l2Entries));
  if (l1Size * 8 > L.MAX_L1_BYTES) {
    throw new BlockError('EINVAL', `size: ${s.size} bytes needs an L1 table of ${l1Size * 8} bytes, above QEMU's limit of ${L.MAX_L1_BYTES} (use a larger cluster size)`, { field: 'size' });
  }
  const m = new Qcow2FileModel(s.clusterBits, s.refcountOrder);
  m.allocClusters(3 * cs);
  const l1 = new Array<bigint>(l1Size).fill(0n);
  let l1Offset = 0;
  if (l1Size > 0) {
    l1Offset = m.allocClusters(l1Size * 8);
    m.write(l1Offset, new Uint8Array(l1Size * 8));
  }
  const writeL1Entry = (i: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(l1[i]);
    m.write(l1Offset + i * 8, b);
  };
  const l2For = (guest: number): Uint8Array => {
    const i = Math.floor(guest / (cs * l2Entries));
    if (l1[i] === 0n) {
      const off = m.allocClusters(cs);
      m.cluster(off / cs).fill(0);
      m.extend(off + cs);
      l1[i] = copiedEntry(off);
      writeL1Entry(i);
    }
    return m.cluster(bigEntryOffset(l1[i]) / cs);
  };
  const link = (guest: number, host: number, count: number) => {
    const l2 = Buffer.from(l2For(guest).buffer);
    const first = Math.floor(guest / cs) % l2Entries;
    // Preallocated entries: the cluster is allocated; with extended L2 the subcluster bitmap stays 0, as in QEMU.
    for (let i = 0; i < count; i++) l2.writeBigUInt64BE(copiedEntry(host + i * cs), (first + i) * l2EntrySize);
  };

  const plan: Qcow2Plan = { clusterSize: cs, fileLength: 0, writes: [] };
  let tail: { offset: number; data: Uint8Array } | undefined;
  if (s.dataFile !== undefined) plan.dataFileLength = s.size;
  if (s.preallocation === 'metadata' || (s.dataFile !== undefined && s.preallocation !== 'off')) {
    const { end, lastEnd } = preallocateMetadata(s, m, cs, l2Entries, l2For, link);
    if (s.dataFile !== undefined) plan.dataFileLength = Math.max(s.size, end);
    else {
      m.extend(end);
      // With a size that ends inside a cluster, qemu-img also writes the guest's bytes of that
      // cluster (zeros), so they are data on disk (not with extended L2, whose bitmap stays 0).
      const partial = s.size % cs;
      if (partial !== 0 && !s.extendedL2) tail = { offset: lastEnd - partial, data: new Uint8Array(partial) };
    }
  } else if (s.preallocation !== 'off') {
    plan.preallocate = preallocateData(s, m, cs, l2Entries, link);
  }

  m.write(l1Offset, l1Bytes(l1));
  m.write(
    0,
    buildHeaderCluster({
      version: s.version,
      clusterBits: s.clusterBits,
      size: s.size,
      l1Size,
      l1TableOffset: l1Offset,
      refcountTableOffset: m.refcountTableOffset,
      refcountTableClusters: m.refcountTableClusters,
      refcountOrder: s.refcountOrder,
      lazyRefcounts: s.lazyRefcounts,
      extendedL2: s.extendedL2,
      compressionType: s.compressionType,
      dataFileRaw: s.dataFileRaw,
      ...(s.dataFile === undefined ? {} : { dataFile: s.dataFile }),
      ...(s.backing === undefined ? {} : { backingFile: s.backing }),
      ...(s.backingFormat === undefined ? {} : { backingFormat: s.backingFormat }),
    }),
  );
  plan.fileLength = m.fileLength;
  for (const index of [...m.written.keys()].sort((a, b) => a - b)) {
    const [from, to] = m.written.get(index)!;
    const end = Math.min(to, m.fileLength - index * cs);
    if (end > from) plan.writes.push({ offset: index * cs + from, data: m.clusters.get(index)!.subarray(from, end) });
  }
  if (tail) plan.writes.push(tail);
  return plan;
}

function l1Bytes(l1: bigint[]): Uint8Array {
  const b = Buffer.alloc(l1.length * 8);
  for (let i = 0; i < l1.length; i++) b.writeBigUInt64BE(l1[i], i * 8);
  return b;
}

/**
 * preallocation=metadata (QEMU preallocate_co): per L2 range, its L2 table then its data
 * clusters. Returns the end of the last data cluster, to which the file (or the external data
 * file, where data clusters sit at their guest offsets) is extended.
 */
function preallocateMetadata(
  s: Qcow2CreateSettings,
  m: Qcow2FileModel,
  cs: number,
  l2Entries: number,
  l2For: (guest: number) => Uint8Array,
  link: (guest: number, host: number, count: number) => void,
): { end: number; lastEnd: number } {
  const external = s.dataFile !== undefined;
  const chunkMax = Math.floor(INT_MAX / cs) * cs;
  let offset = 0;
  let lastEnd = 0;
  while (offset < s.size) {
    const want = Math.min(s.size - offset, chunkMax);
    // One qcow2_alloc_host_offset call: continues into the next L2 range only while the
    // host clusters stay contiguous.
    let start = offset;
    let remaining = want;
    let host0 = -1;
    let next = -1;
    while (remaining > 0) {
      l2For(start);
      const index = Math.floor(start / cs) % l2Entries;
      let count = Math.min(Math.ceil(remaining / cs), l2Entries - index);
      let host: number;
      if (external) {
        host = start;
      } else if (next === -1) {
        host = m.allocClusters(count * cs);
      } else {
        count = m.allocClustersAt(next, count);
        if (count === 0) break;
        host = next;
      }
      link(start, host, count);
      if (host0 === -1) host0 = host;
      const got = Math.min(remaining, count * cs);
      start += got;
      remaining -= got;
      next = host + count * cs;
    }
    const done = want - remaining;
    lastEnd = host0 + done;
    offset += done;
  }
  // The last allocation counts whole allocation units (subclusters with extended L2): a size
  // that ends inside one extends the file to its end (measured with qemu-img 7.2).
  const unit = s.extendedL2 ? cs / 32 : cs;
  return { end: Math.ceil(lastEnd / unit) * unit, lastEnd };
}

/**
 * preallocation=falloc/full (QEMU qcow2_co_truncate): new refcount structures sized for all
 * data clusters at the end of the file, the data clusters after them, then the L2 tables
 * wherever the allocator finds room. Returns the host range whose space is reserved.
 */
function preallocateData(
  s: Qcow2CreateSettings,
  m: Qcow2FileModel,
  cs: number,
  l2Entries: number,
  link: (guest: number, host: number, count: number) => void,
): { start: number; end: number } {
  let oldFileSize = Math.ceil(m.fileLength / cs) * cs;
  let last = oldFileSize / cs - 1;
  while (last >= 0 && m.refcount(last) === 0) last--;
  oldFileSize = (last + 1) * cs;
  const dataClusters = Math.ceil(s.size / cs);
  const l2Tables = Math.ceil(dataClusters / l2Entries) + 1;
  const start = m.refcountArea(oldFileSize, dataClusters + l2Tables, true, 0, 0);
  const got = m.allocClustersAt(start, dataClusters);
  if (got !== dataClusters) throw new Error(`qcow2 create: preallocated ${got} of ${dataClusters} data clusters`);
  const end = start + dataClusters * cs;
  const range = { start: m.fileLength, end };
  m.extend(end);
  let guest = 0;
  let host = start;
  let remaining = dataClusters;
  while (remaining > 0) {
    const count = Math.min(remaining, l2Entries - (Math.floor(guest / cs) % l2Entries));
    link(guest, host, count);
    guest += count * cs;
    host += count * cs;
    remaining -= count;
  }
  return range;
}
