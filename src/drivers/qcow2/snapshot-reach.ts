import { BlockError } from '../../errors.js';
import { COMPRESSED, COPIED, compressedHost, compressedSectors, entryOffset, L1_RESERVED_HI, L1_RESERVED_LO, l2EntryBytes, OFFSET_HI, OFFSET_LO, setCopied } from './entries.js';
import { type SnapshotContext, writeMetadata } from './snapshot-context.js';

const corrupt = (field: string, offset: number, message: string) => new BlockError('ECORRUPT', `qcow2: ${field} ${message} (at byte ${offset})`, { field, offset });

/** The L2 table offset of entry `i` of `l1` (0: none), checked: no reserved bits, aligned, inside the file. */
function l2OffsetAt(c: SnapshotContext, l1: Buffer, l1At: number, i: number): number {
  const hi = l1.readUInt32BE(i * 8);
  const lo = l1.readUInt32BE(i * 8 + 4);
  if (hi & L1_RESERVED_HI || lo & L1_RESERVED_LO) throw corrupt('L1 entry', l1At + i * 8, 'has reserved bits set');
  const off = entryOffset(hi, lo);
  if (off === 0) return 0;
  const cs = c.h.clusterSize;
  if (off % cs !== 0) throw corrupt('L1 entry', l1At + i * 8, `points to an unaligned L2 table at ${off}`);
  if (off + cs > Math.max(c.file.length, c.refcounts.end)) throw corrupt('L1 entry', l1At + i * 8, `points to an L2 table at ${off} beyond the end of the file`);
  return off;
}

/**
 * How an L2 table's entries are decoded in the loops below: read through a DataView, the index
 * of the cluster computed without byte offsets (small integers throughout, so that a snapshot's
 * first run, in code not yet optimized, boxes no number per entry).
 */
interface Decoder {
  bits: number;
  /** 2^(32 - bits): the high word's weight in clusters. */
  hiWeight: number;
  /** Low-word bits that must be 0 in a cluster-aligned offset. */
  unaligned: number;
  step: number;
}

function decoder(c: SnapshotContext): Decoder {
  const bits = c.h.clusterBits;
  return { bits, hiWeight: 2 ** (32 - bits), unaligned: OFFSET_LO & ((1 << bits) - 1), step: l2EntryBytes(c.h.extendedL2) };
}

const view = (table: Buffer) => new DataView(table.buffer, table.byteOffset, table.byteLength);

/** The cluster index an entry's offset names (0: none, -1: not cluster aligned). */
function clusterOf(hi: number, lo: number, d: Decoder): number {
  if (lo & d.unaligned) return -1;
  return (hi & OFFSET_HI) * d.hiWeight + ((lo & OFFSET_LO) >>> d.bits);
}

/**
 * The host clusters L2 table `table` (at `l2Offset`) maps, data and compressed, into `out` (room
 * for 3 per entry: a compressed one spans at most 3), checked: aligned; returns how many.
 * Collected per table so that refcounts change in one pass over the blocks they sit in.
 */
function mappedClusters(c: SnapshotContext, d: Decoder, table: Buffer, l2Offset: number, out: Float64Array): number {
  const cs = c.h.clusterSize;
  const v = view(table);
  let n = 0;
  for (let e = 0; e < cs; e += d.step) {
    const hi = v.getInt32(e);
    const lo = v.getInt32(e + 4);
    if (hi & COMPRESSED) {
      const start = compressedHost(hi, lo, d.bits);
      const last = Math.floor((start - (start % 512) + compressedSectors(hi, d.bits) * 512 - 1) / cs);
      for (let k = Math.floor(start / cs); k <= last; k++) out[n++] = k;
      continue;
    }
    if ((hi & OFFSET_HI) === 0 && (lo & OFFSET_LO) === 0) continue;
    const k = clusterOf(hi, lo, d);
    if (k < 0) throw corrupt('L2 entry', l2Offset + e, `points to an unaligned cluster at ${entryOffset(hi, lo)}`);
    out[n++] = k;
  }
  return n;
}

/** Clears COPIED in every entry of `table` that maps a cluster and has it (a compressed entry never does); returns whether any had. */
function clearCopied(d: Decoder, table: Buffer): boolean {
  const v = view(table);
  let changed = false;
  for (let e = 0; e < table.length; e += d.step) {
    const hi = v.getInt32(e);
    if (hi & COPIED && !(hi & COMPRESSED) && ((hi & OFFSET_HI) !== 0 || (v.getInt32(e + 4) & OFFSET_LO) !== 0)) {
      v.setInt32(e, hi & ~COPIED);
      changed = true;
    }
  }
  return changed;
}

/**
 * Adds one reference (addend 1) to every cluster the L1 table `l1` (read from `l1At`) reaches,
 * its L2 tables and the data and compressed clusters they map, and clears COPIED in those L2
 * tables and in `l1` (all of it is shared now); or (addend -1) drops those references, deferred
 * until {@link Refcounts.applyReleases} (the caller makes sure no table on disk still reaches
 * them). QEMU qcow2_update_snapshot_refcount with addend ±1: a shared L2 table counts for its
 * clusters once per L1 table that reaches it, as qemu-img check counts.
 */
export async function changeReach(c: SnapshotContext, l1: Buffer, l1At: number, addend: 1 | -1): Promise<void> {
  const cs = c.h.clusterSize;
  const rc = c.refcounts;
  const d = decoder(c);
  // the table's clusters and the table itself
  const clusters = new Float64Array((3 * cs) / d.step + 1);
  for (let i = 0; i < l1.length / 8; i++) {
    const l2Offset = l2OffsetAt(c, l1, l1At, i);
    if (l2Offset === 0) continue;
    const table = await c.cache.get(l2Offset);
    let n = mappedClusters(c, d, table, l2Offset, clusters);
    clusters[n++] = l2Offset / cs;
    if (addend < 0) rc.releaseClusters(clusters, n);
    else {
      await rc.incrementMany(clusters, n);
      if (clearCopied(d, table)) c.cache.markDirty(l2Offset, table);
      l1.writeUInt32BE(setCopied(l1.readUInt32BE(i * 8), false), i * 8);
    }
    // Bounded memory: a large image's tables go out in batches (refcounts with them).
    if (c.cache.overfull) await writeMetadata(c);
  }
}

/**
 * Sets COPIED in the active L1 table and its L2 tables exactly where the refcount is 1, as
 * qemu-img check wants (QEMU qcow2_update_snapshot_refcount with addend 0). Changed L2 tables
 * are left dirty in the cache; returns whether the L1 table changed.
 */
export async function fixCopied(c: SnapshotContext): Promise<boolean> {
  const cs = c.h.clusterSize;
  const d = decoder(c);
  const l1 = c.l1;
  const hosts = new Float64Array(cs / d.step);
  const counts = new Float64Array(cs / d.step);
  let l1Changed = false;
  for (let i = 0; i < l1.length / 8; i++) {
    const l2Offset = l2OffsetAt(c, l1, c.l1Offset, i);
    if (l2Offset === 0) continue;
    const hi1 = l1.readUInt32BE(i * 8);
    const own = (await c.refcounts.get(l2Offset / cs)) === 1;
    if (((hi1 & COPIED) !== 0) !== own) {
      l1.writeUInt32BE(setCopied(hi1, own), i * 8);
      l1Changed = true;
    }
    const table = await c.cache.get(l2Offset);
    const v = view(table);
    let found = 0;
    // An unaligned offset (-1) counts as no cluster here: changeReach refuses it before.
    for (let e = 0; e < cs; e += d.step) {
      const hi = v.getInt32(e);
      if (hi & COMPRESSED) continue;
      const k = clusterOf(hi, v.getInt32(e + 4), d);
      if (k > 0) hosts[found++] = k;
    }
    await c.refcounts.getMany(hosts, found, counts);
    let changed = false;
    for (let e = 0, n = 0; e < cs; e += d.step) {
      const hi = v.getInt32(e);
      if (hi & COMPRESSED || clusterOf(hi, v.getInt32(e + 4), d) <= 0) continue;
      const alone = counts[n++] === 1;
      if (((hi & COPIED) !== 0) !== alone) {
        v.setInt32(e, alone ? hi | COPIED : hi & ~COPIED);
        changed = true;
      }
    }
    if (changed) c.cache.markDirty(l2Offset, table);
    if (c.cache.overfull) await writeMetadata(c);
  }
  return l1Changed;
}
