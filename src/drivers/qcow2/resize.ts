import { BlockError, isBlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import type { TruncateOptions } from '../../node/types.js';
import { COMPRESSED, compressedHost, compressedSectors, entryOffset, l2EntryBytes } from './entries.js';
import type { Qcow2Header } from './header.js';
import type { L2Cache } from './l2-cache.js';
import * as L from './limits.js';
import type { Refcounts } from './refcounts.js';
import type { ClusterMap } from './tables.js';
import type { Qcow2Writer } from './writer.js';
import type { WriterContext } from './writer-context.js';

/** The parts of an open, writable qcow2 node a resize changes. */
export interface ResizeTarget {
  readonly nodeName: string;
  readonly h: Qcow2Header;
  readonly file: BlockNode;
  readonly refcounts: Refcounts;
  readonly cache: L2Cache;
  readonly tables: ClusterMap;
  readonly writer: Qcow2Writer;
  /** The writer's view of the L1 table (replaced when the table grows). */
  readonly wc: WriterContext;
  readonly backing: BlockNode | undefined;
  readonly dataNode: BlockNode | undefined;
  /** The virtual size, read and set. */
  size: number;
  /** Called with the new L1 table when it moved (the open image's record of it). */
  readonly onNewL1: (l1: Buffer, offset: number) => void;
}

const HEADER_SIZE_AT = 24;
const HEADER_L1_AT = 36;
/** Bytes of zeros written at a time for preallocation=full. */
const FULL_CHUNK = 1 << 20;

/**
 * Resizes a qcow2 image (QEMU qcow2_co_truncate). Growing: the L1 table moves to new clusters
 * when it must cover more (written and synced before the header points at it, the old one freed
 * after), what a backing file or an old partial last cluster would show in the new part is
 * zeroed, then the header's size. Shrinking: the clusters past the new end are dropped, the L2
 * tables wholly past it freed (their L1 entries cleared on disk first), then the header's size.
 */
export async function resizeQcow2(t: ResizeTarget, newSize: number, options: TruncateOptions): Promise<void> {
  const { h, nodeName } = t;
  const ctx = { node: nodeName, field: 'size' };
  if (newSize % L.SECTOR_SIZE !== 0) throw new BlockError('EINVAL', `The new size must be a multiple of ${L.SECTOR_SIZE}`, ctx);
  if (h.nbSnapshots > 0 && h.version < 3) throw new BlockError('ENOTSUP', "Can't resize a v2 image which has snapshots", ctx);
  if (t.dataNode) throw new BlockError('ENOTSUP', 'qcow2: resizing an image with an external data file is not supported', { node: nodeName, field: 'data-file' });
  const prealloc = options.prealloc ?? 'off';
  if (prealloc !== 'off' && prealloc !== 'full') {
    throw new BlockError('ENOTSUP', `qcow2: preallocation mode '${prealloc}' is not supported when resizing (off or full)`, { node: nodeName, field: 'prealloc' });
  }
  const oldSize = t.size;
  if (newSize === oldSize) return;
  if (newSize > oldSize) await grow(t, oldSize, newSize, prealloc === 'full');
  else await shrink(t, oldSize, newSize);
}

/** Guest bytes one L2 table covers. */
function tableSpan(h: Qcow2Header): number {
  return h.clusterSize * (h.clusterSize / l2EntryBytes(h.extendedL2));
}

async function grow(t: ResizeTarget, oldSize: number, newSize: number, full: boolean): Promise<void> {
  const { h, file, refcounts } = t;
  const cs = h.clusterSize;
  const entries = Math.ceil(newSize / tableSpan(h));
  if (entries * 8 > L.MAX_L1_BYTES) {
    throw new BlockError('EFBIG', `Failed to grow the L1 table: File too large (${entries} entries exceed ${L.MAX_L1_BYTES} bytes)`, { node: t.nodeName, field: 'size' });
  }
  if (entries * 8 > t.wc.l1.length) {
    await t.writer.exclusive(async () => {
      const bytes = entries * 8;
      const clusters = Math.ceil(bytes / cs);
      const at = await refcounts.allocate(clusters);
      const table = Buffer.alloc(clusters * cs);
      t.wc.l1.copy(table);
      await file.write(at, table, true);
      await refcounts.writeBack();
      await file.flush();
      const head = Buffer.alloc(12);
      head.writeUInt32BE(entries, 0);
      head.writeBigUInt64BE(BigInt(at), 4);
      await file.write(HEADER_L1_AT, head);
      await file.flush();
      const oldAt = t.wc.l1Offset;
      const oldBytes = t.wc.l1.length;
      const l1 = table.subarray(0, bytes);
      t.wc.l1 = l1;
      t.wc.l1Offset = at;
      t.tables.replaceL1(l1, at);
      t.onNewL1(l1, at);
      h.l1Size = entries;
      h.l1TableOffset = at;
      if (oldBytes > 0 && oldAt !== 0) {
        refcounts.release(oldAt, oldBytes);
        await refcounts.applyReleases();
        await refcounts.writeBack();
        await file.flush();
      }
    });
  }
  // What would show in the new part reads as zeros: a backing file's bytes (as QEMU), and what an
  // earlier shrink left in the old last cluster past the old end (QEMU leaves that visible).
  const tailEnd = Math.min(newSize, Math.ceil(oldSize / cs) * cs);
  const zeroEnd = Math.max(tailEnd, t.backing ? Math.min(newSize, t.backing.length) : 0);
  if (full) {
    // preallocation=full: every new cluster allocated and its zeros written, as QEMU leaves it.
    const zeros = new Uint8Array(Math.min(FULL_CHUNK, newSize - oldSize));
    for (let pos = oldSize; pos < newSize; pos += zeros.length) await t.writer.write(pos, zeros.subarray(0, Math.min(zeros.length, newSize - pos)));
  } else if (zeroEnd > oldSize && (zeroEnd > tailEnd || (await holdsData(t.tables, oldSize, tailEnd)))) {
    await t.writer.writeZeroes(oldSize, zeroEnd - oldSize);
  }
  await t.writer.exclusive(() => writeSize(t, newSize));
}

/** Whether any byte of [from, to) maps to host data (not zeros, not unallocated). */
async function holdsData(tables: ClusterMap, from: number, to: number): Promise<boolean> {
  for (let pos = from; pos < to; ) {
    const m = await tables.map(pos, to - pos);
    if (m.kind === 'data' || m.kind === 'compressed') return true;
    pos += m.length;
  }
  return false;
}

async function shrink(t: ResizeTarget, oldSize: number, newSize: number): Promise<void> {
  const { h, file, refcounts } = t;
  const cs = h.clusterSize;
  const span = tableSpan(h);
  const cut = Math.ceil(newSize / cs) * cs;
  const keep = Math.ceil(cut / span);
  // The clusters past the end in the last table kept (the writer copies it first if a snapshot shares it).
  const partEnd = Math.min(keep * span, Math.ceil(oldSize / cs) * cs);
  if (cut < partEnd) await t.writer.discard(cut, partEnd - cut);
  await t.writer.exclusive(async () => {
    const l1 = t.wc.l1;
    const releases: number[] = [];
    let any = false;
    for (let i = keep; i < l1.length / 8; i++) {
      const l2At = tableOffset(t, l1, i);
      if (l2At === 0) continue;
      any = true;
      // A data cluster counts one reference per L1 table that reaches it (QEMU), shared L2 table or not.
      collectClusters(t, await t.cache.get(l2At), l2At, releases);
      releases.push(l2At, cs);
    }
    if (any) {
      l1.fill(0, keep * 8);
      await file.write(t.wc.l1Offset + keep * 8, l1.subarray(keep * 8), true);
      await file.flush();
      for (let i = 0; i < releases.length; i += 2) refcounts.release(releases[i]!, releases[i + 1]!);
      await refcounts.applyReleases();
      await refcounts.writeBack();
      await file.flush();
    }
    await writeSize(t, newSize);
    await trimFile(t);
  });
}

/**
 * Cuts the image file after its last cluster in use, as QEMU does after a shrink. A file that
 * cannot be resized (a protocol without the hook) keeps its length: QEMU only warns there too.
 */
async function trimFile(t: ResizeTarget): Promise<void> {
  const { file, refcounts, h } = t;
  const cs = h.clusterSize;
  let last = Math.ceil(file.length / cs) - 1;
  while (last >= 0 && (await refcounts.get(last)) === 0) last--;
  const end = (last + 1) * cs;
  if (end >= file.length || end === 0) return;
  try {
    await file.truncate(end, { shrink: true });
  } catch (e) {
    if (!isBlockError(e, 'ENOTSUP')) throw e;
  }
}

/** The L2 table offset of L1 entry `i`, validated (an image's tables may be hostile). */
function tableOffset(t: ResizeTarget, l1: Buffer, i: number): number {
  const at = entryOffset(l1.readUInt32BE(i * 8), l1.readUInt32BE(i * 8 + 4));
  if (at === 0) return 0;
  if (at % t.h.clusterSize !== 0 || at + t.h.clusterSize > t.refcounts.end) {
    throw new BlockError('ECORRUPT', `qcow2: L1 entry ${i} points to an invalid L2 table at ${at}`, { node: t.nodeName, field: 'L1 entry', offset: t.wc.l1Offset + i * 8 });
  }
  return at;
}

/** Appends (offset, length) of every host cluster an L2 table references to `out`. */
function collectClusters(t: ResizeTarget, l2: Buffer, l2At: number, out: number[]): void {
  const { h } = t;
  const step = l2EntryBytes(h.extendedL2);
  const limit = t.refcounts.end;
  for (let e = 0; e < h.clusterSize; e += step) {
    const hi = l2.readUInt32BE(e);
    const lo = l2.readUInt32BE(e + 4);
    let host: number;
    let length: number;
    if (hi & COMPRESSED) {
      const at = compressedHost(hi, lo, h.clusterBits);
      host = at - (at % L.SECTOR_SIZE);
      length = compressedSectors(hi, h.clusterBits) * L.SECTOR_SIZE;
    } else {
      host = entryOffset(hi, lo);
      length = h.clusterSize;
      if (host !== 0 && host % h.clusterSize !== 0) host = -1;
    }
    if (host === 0) continue;
    if (host < 0 || host + length > limit + h.clusterSize) {
      throw new BlockError('ECORRUPT', `qcow2: L2 entry ${e / step} of the table at ${l2At} points outside the image`, { node: t.nodeName, field: 'L2 entry', offset: l2At + e });
    }
    out.push(host, length);
  }
}

/** Under the writer's lock: the header's virtual size, synced, then the node's. */
async function writeSize(t: ResizeTarget, size: number): Promise<void> {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(size));
  await t.file.write(HEADER_SIZE_AT, b);
  await t.file.flush();
  t.h.size = size;
  t.size = size;
}
