import { BlockError } from '../../errors.js';
import * as L from './limits.js';
import { metadataReader } from './open-steps.js';
import { applyReleases, type SnapshotContext } from './snapshot-context.js';
import type { Qcow2Snapshot } from './snapshots.js';

/** Fixed part of an entry, and the extra data QEMU writes (vm_state_size_large, disk_size, icount). */
const ENTRY_FIXED = 40;
const EXTRA_BYTES = 24;
/** id_str_size and name_size are 16-bit fields. */
const MAX_STRING_BYTES = 0xffff;

/** Bytes of one entry, padded to 8. */
function entryBytes(s: Qcow2Snapshot): number {
  return Math.ceil((ENTRY_FIXED + EXTRA_BYTES + Buffer.byteLength(s.id) + Buffer.byteLength(s.name)) / 8) * 8;
}

/** The snapshot table as bytes (docs/interop/qcow2.txt, "Snapshots"), every entry with 24 bytes of extra data. */
export function encodeSnapshotTable(list: readonly Qcow2Snapshot[]): Buffer {
  if (list.length > L.MAX_SNAPSHOTS) throw new BlockError('EFBIG', `qcow2: more than ${L.MAX_SNAPSHOTS} snapshots`, { field: 'nb_snapshots' });
  let total = 0;
  for (const s of list) {
    if (Buffer.byteLength(s.id) > MAX_STRING_BYTES || Buffer.byteLength(s.name) > MAX_STRING_BYTES) {
      throw new BlockError('EINVAL', `qcow2: snapshot id or name longer than ${MAX_STRING_BYTES} bytes`, { field: 'name' });
    }
    total += entryBytes(s);
  }
  if (total > L.MAX_SNAPSHOT_TABLE_BYTES) throw new BlockError('EFBIG', `qcow2: the snapshot table would exceed ${L.MAX_SNAPSHOT_TABLE_BYTES} bytes`, { field: 'snapshots' });
  const b = Buffer.alloc(total);
  let at = 0;
  for (const s of list) {
    const id = Buffer.from(s.id);
    const name = Buffer.from(s.name);
    b.writeBigUInt64BE(BigInt(s.l1TableOffset), at);
    b.writeUInt32BE(s.l1Size, at + 8);
    b.writeUInt16BE(id.length, at + 12);
    b.writeUInt16BE(name.length, at + 14);
    b.writeUInt32BE(s.date.sec >>> 0, at + 16);
    b.writeUInt32BE(s.date.nsec >>> 0, at + 20);
    b.writeBigUInt64BE(BigInt(s.vmClockNs), at + 24);
    // A VM state too large for 32 bits reads as a disk-only snapshot in old readers (QEMU).
    b.writeUInt32BE(s.vmStateSize <= 0xffffffff ? s.vmStateSize : 0, at + 32);
    b.writeUInt32BE(EXTRA_BYTES, at + 36);
    b.writeBigUInt64BE(BigInt(s.vmStateSize), at + 40);
    b.writeBigUInt64BE(BigInt(s.size), at + 48);
    b.writeBigInt64BE(BigInt(s.icount), at + 56);
    id.copy(b, at + ENTRY_FIXED + EXTRA_BYTES);
    name.copy(b, at + ENTRY_FIXED + EXTRA_BYTES + id.length);
    at += entryBytes(s);
  }
  return b;
}

/**
 * Replaces the snapshot table with `list` as QEMU's qcow2_write_snapshots does: the new table in
 * new clusters (with their refcounts) on disk and synced, then one header write of nb_snapshots
 * and snapshots_offset (adjacent fields), synced, then the old table's clusters freed. A crash
 * leaves the old table or the new one; at worst the other one's clusters leak.
 */
export async function writeSnapshotTable(c: SnapshotContext, list: Qcow2Snapshot[]): Promise<void> {
  const bytes = encodeSnapshotTable(list);
  const cs = c.h.clusterSize;
  let offset = 0;
  if (bytes.length > 0) {
    offset = await c.refcounts.allocate(Math.ceil(bytes.length / cs));
    try {
      await c.refcounts.writeBack();
      await c.file.write(offset, bytes, true);
      await c.file.flush();
    } catch (e) {
      c.refcounts.release(offset, bytes.length);
      throw e;
    }
  }
  const old = { offset: c.h.snapshotsOffset, bytes: await oldTableBytes(c) };
  const header = Buffer.alloc(12);
  header.writeUInt32BE(list.length, 0);
  header.writeBigUInt64BE(BigInt(offset), 4);
  await c.file.write(60, header, true);
  await c.file.flush();
  c.h.nbSnapshots = list.length;
  c.h.snapshotsOffset = offset;
  // Each entry is rewritten from memory; their positions are recomputed for later messages.
  let at = offset;
  for (const s of list) {
    s.entryOffset = at;
    at += entryBytes(s);
  }
  c.snapshots.splice(0, c.snapshots.length, ...list);
  if (old.bytes > 0) {
    c.refcounts.release(old.offset, old.bytes);
    await applyReleases(c);
  }
}

/** Bytes the current table spans on disk: to the end of its last entry, read again (its extra data may be of any size). */
async function oldTableBytes(c: SnapshotContext): Promise<number> {
  const last = c.snapshots[c.snapshots.length - 1];
  if (c.h.nbSnapshots === 0 || last === undefined) return 0;
  const head = Buffer.from(await metadataReader(c.file)(last.entryOffset, ENTRY_FIXED));
  const bytes = ENTRY_FIXED + head.readUInt32BE(36) + head.readUInt16BE(12) + head.readUInt16BE(14);
  return last.entryOffset + Math.ceil(bytes / 8) * 8 - c.h.snapshotsOffset;
}
