import { BlockError } from '../../errors.js';
import { COMPRESSED, COPIED, compressedHost, compressedSectors, entryOffset, L1_RESERVED_HI, L1_RESERVED_LO, l2EntryBytes, setCopied } from './entries.js';
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
 * Adds one reference (addend 1) to every cluster the L1 table `l1` (read from `l1At`) reaches,
 * its L2 tables and the data and compressed clusters they map, and clears COPIED in those L2
 * tables and in `l1` (all of it is shared now); or (addend -1) drops those references, deferred
 * until {@link Refcounts.applyReleases} (the caller makes sure no table on disk still reaches
 * them). QEMU qcow2_update_snapshot_refcount with addend ±1: a shared L2 table counts for its
 * clusters once per L1 table that reaches it, as qemu-img check counts.
 */
export async function changeReach(c: SnapshotContext, l1: Buffer, l1At: number, addend: 1 | -1): Promise<void> {
  const cs = c.h.clusterSize;
  const eb = l2EntryBytes(c.h.extendedL2);
  const rc = c.refcounts;
  for (let i = 0; i < l1.length / 8; i++) {
    const l2Offset = l2OffsetAt(c, l1, l1At, i);
    if (l2Offset === 0) continue;
    const table = await c.cache.get(l2Offset);
    let changed = false;
    for (let e = 0; e < cs; e += eb) {
      const hi = table.readUInt32BE(e);
      const lo = table.readUInt32BE(e + 4);
      if (hi & COMPRESSED) {
        const host = compressedHost(hi, lo, c.h.clusterBits);
        const start = host - (host % 512);
        const bytes = compressedSectors(hi, c.h.clusterBits) * 512;
        if (addend < 0) rc.release(start, bytes);
        else for (let k = Math.floor(start / cs); k <= Math.floor((start + bytes - 1) / cs); k++) await rc.increment(k);
        continue;
      }
      const host = entryOffset(hi, lo);
      if (host === 0) continue;
      if (host % cs !== 0) throw corrupt('L2 entry', l2Offset + e, `points to an unaligned cluster at ${host}`);
      if (addend < 0) {
        rc.release(host, cs);
        continue;
      }
      await rc.increment(host / cs);
      if (hi & COPIED) {
        table.writeUInt32BE(setCopied(hi, false), e);
        changed = true;
      }
    }
    if (changed) c.cache.markDirty(l2Offset, table);
    if (addend < 0) rc.release(l2Offset, cs);
    else {
      await rc.increment(l2Offset / cs);
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
  const eb = l2EntryBytes(c.h.extendedL2);
  const l1 = c.l1;
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
    let changed = false;
    for (let e = 0; e < cs; e += eb) {
      const hi = table.readUInt32BE(e);
      if (hi & COMPRESSED) continue;
      const host = entryOffset(hi, table.readUInt32BE(e + 4));
      if (host === 0) continue;
      const alone = (await c.refcounts.get(Math.floor(host / cs))) === 1;
      if (((hi & COPIED) !== 0) !== alone) {
        table.writeUInt32BE(setCopied(hi, alone), e);
        changed = true;
      }
    }
    if (changed) c.cache.markDirty(l2Offset, table);
    if (c.cache.overfull) await writeMetadata(c);
  }
  return l1Changed;
}
