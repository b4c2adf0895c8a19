import { BlockError } from '../../errors.js';
import type { NewSnapshot } from '../../node/types.js';
import * as L from './limits.js';
import { type SnapshotContext, writeMetadata } from './snapshot-context.js';
import { changeReach } from './snapshot-reach.js';
import { writeSnapshotTable } from './snapshot-table-write.js';
import type { Qcow2Snapshot } from './snapshots.js';

/** QEMU's find_new_snapshot_id: one more than the largest id read as a number (strtoul: digits at the start, else 0). */
export function nextSnapshotId(list: readonly Qcow2Snapshot[]): string {
  let max = 0;
  for (const s of list) {
    const m = /^\s*\+?(\d+)/.exec(s.id);
    const n = m ? Number(m[1]) : 0;
    if (n > max) max = n;
  }
  return String(max + 1);
}

/**
 * Takes an internal snapshot (QEMU qcow2_snapshot_create), in an order a crash cannot turn into
 * corruption, only into leaked clusters: a copy of the active L1 table in new clusters; one more
 * reference to everything the active L1 reaches, with COPIED cleared in its tables (refcounts,
 * L2 tables and the active L1 written together, synced); then the new snapshot table and the
 * header pointing at it.
 */
export async function createSnapshot(c: SnapshotContext, req: NewSnapshot, now: { sec: number; nsec: number }): Promise<Qcow2Snapshot> {
  const id = req.id ?? nextSnapshotId(c.snapshots);
  if (c.snapshots.some((s) => s.id === id)) throw new BlockError('EEXIST', `qcow2: a snapshot with id '${id}' already exists`, { field: 'id' });
  if (c.snapshots.length >= L.MAX_SNAPSHOTS) throw new BlockError('EFBIG', `qcow2: the image has the most snapshots qcow2 allows (${L.MAX_SNAPSHOTS})`, { field: 'nb_snapshots' });
  const sn: Qcow2Snapshot = {
    id,
    name: req.name,
    size: c.size,
    date: req.date ?? now,
    vmClockNs: req.vmClockNs ?? 0,
    vmStateSize: 0,
    icount: req.icount ?? 0,
    l1TableOffset: 0,
    l1Size: c.l1.length / 8,
    entryOffset: 0,
  };
  const bytes = c.l1.length;
  if (bytes > 0) sn.l1TableOffset = await c.refcounts.allocate(Math.ceil(bytes / c.h.clusterSize));
  await changeReach(c, c.l1, c.l1Offset, 1);
  if (bytes > 0) await c.file.write(sn.l1TableOffset, Buffer.from(c.l1), true);
  await writeMetadata(c, c.l1);
  await writeSnapshotTable(c, [...c.snapshots, sn]);
  return sn;
}
