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
 * The cluster index an L2 entry's offset names (0: none), or -1 when the offset is not cluster
 * aligned. `hi`/`lo` are read signed and the index computed without byte offsets: small integers
 * throughout, so a snapshot's first run (code not yet optimized) boxes no number per entry.
 */
function clusterOf(hi: number, lo: number, bits: number): number {
  const low = lo & OFFSET_LO;
  if (low & ((1 << bits) - 1)) return -1;
  return (hi & OFFSET_HI) * 2 ** (32 - bits) + (low >>> bits);
}

/**
 * The host clusters L2 table `table` (at `l2Offset`) maps, data and compressed, into `out` (its
 * length reset first), checked: aligned. Collected per table so that refcounts change in one
 * pass over the blocks they sit in.
 */
function mappedClusters(c: SnapshotContext, table: Buffer, l2Offset: number, out: number[]): void {
  const cs = c.h.clusterSize;
  const bits = c.h.clusterBits;
  const eb = l2EntryBytes(c.h.extendedL2);
  out.length = 0;
  for (let e = 0; e < cs; e += eb) {
    const hi = table.readInt32BE(e);
    const lo = table.readInt32BE(e + 4);
    if (hi & COMPRESSED) {
      const start = compressedHost(hi, lo, bits);
      const last = Math.floor((start - (start % 512) + compressedSectors(hi, bits) * 512 - 1) / cs);
      for (let k = Math.floor(start / cs); k <= last; k++) out.push(k);
      continue;
    }
    const k = clusterOf(hi, lo, bits);
    if (k > 0) out.push(k);
    else if (k < 0) throw corrupt('L2 entry', l2Offset + e, `points to an unaligned cluster at ${entryOffset(hi, lo)}`);
  }
}

/** Clears COPIED in every entry of `table` that maps a cluster and has it (a compressed entry never does); returns whether any had. */
function clearCopied(c: SnapshotContext, table: Buffer): boolean {
  const eb = l2EntryBytes(c.h.extendedL2);
  let changed = false;
  for (let e = 0; e < table.length; e += eb) {
    const hi = table.readInt32BE(e);
    if (hi & COPIED && !(hi & COMPRESSED) && clusterOf(hi, table.readInt32BE(e + 4), c.h.clusterBits) !== 0) {
      table.writeInt32BE(hi & ~COPIED, e);
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
  const clusters: number[] = [];
  for (let i = 0; i < l1.length / 8; i++) {
    const l2Offset = l2OffsetAt(c, l1, l1At, i);
    if (l2Offset === 0) continue;
    const table = await c.cache.get(l2Offset);
    mappedClusters(c, table, l2Offset, clusters);
    clusters.push(l2Offset / cs);
    if (addend < 0) rc.releaseClusters(clusters, clusters.length);
    else {
      await rc.incrementMany(clusters, clusters.length);
      if (clearCopied(c, table)) c.cache.markDirty(l2Offset, table);
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
  const bits = c.h.clusterBits;
  const eb = l2EntryBytes(c.h.extendedL2);
  const l1 = c.l1;
  const hosts: number[] = [];
  const counts: number[] = [];
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
    hosts.length = 0;
    for (let e = 0; e < cs; e += eb) {
      const hi = table.readInt32BE(e);
      if (hi & COMPRESSED) continue;
      // An unaligned offset (-1) counts as no cluster here: changeReach refuses it before.
      const k = clusterOf(hi, table.readInt32BE(e + 4), bits);
      if (k > 0) hosts.push(k);
    }
    await c.refcounts.getMany(hosts, hosts.length, counts);
    let changed = false;
    for (let e = 0, n = 0; e < cs; e += eb) {
      const hi = table.readInt32BE(e);
      if (hi & COMPRESSED || clusterOf(hi, table.readInt32BE(e + 4), bits) <= 0) continue;
      const alone = counts[n++] === 1;
      if (((hi & COPIED) !== 0) !== alone) {
        table.writeInt32BE(alone ? hi | COPIED : hi & ~COPIED, e);
        changed = true;
      }
    }
    if (changed) c.cache.markDirty(l2Offset, table);
    if (c.cache.overfull) await writeMetadata(c);
  }
  return l1Changed;
}
