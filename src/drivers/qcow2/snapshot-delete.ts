import { BlockError } from '../../errors.js';
import { metadataReader } from './open-steps.js';
import { applyAllReleases, type SnapshotContext, writeMetadata } from './snapshot-context.js';
import { findByIdAndName } from './snapshot-find.js';
import { changeReach, fixCopied } from './snapshot-reach.js';
import { writeSnapshotTable } from './snapshot-table-write.js';
import { checkSnapshotL1, type Qcow2Snapshot } from './snapshots.js';

/**
 * Deletes an internal snapshot (QEMU qcow2_snapshot_delete): out of the table first (a crash
 * after that only leaks), then one reference less to everything its L1 reaches and its L1
 * freed, with COPIED set again in the active tables where a refcount dropped to 1 (the
 * decrements and those flags written together).
 */
export async function deleteSnapshot(c: SnapshotContext, id: string | undefined, name: string | undefined): Promise<Qcow2Snapshot> {
  const sn = findByIdAndName(c.snapshots, id, name);
  if (!sn) throw new BlockError('ENOENT', "Can't find the snapshot", { field: id !== undefined ? 'id' : 'name' });
  checkSnapshotL1(sn, c.h);
  const l1 = Buffer.from(sn.l1Size > 0 ? await metadataReader(c.file)(sn.l1TableOffset, sn.l1Size * 8) : new Uint8Array(0));
  await writeSnapshotTable(
    c,
    c.snapshots.filter((s) => s !== sn),
  );
  await changeReach(c, l1, sn.l1TableOffset, -1);
  if (sn.l1Size > 0) c.refcounts.release(sn.l1TableOffset, sn.l1Size * 8);
  await applyAllReleases(c);
  const l1Changed = await fixCopied(c);
  await writeMetadata(c, l1Changed ? c.l1 : undefined);
  return sn;
}
