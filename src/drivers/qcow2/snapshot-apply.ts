import { BlockError } from '../../errors.js';
import { setCopied } from './entries.js';
import { metadataReader } from './open-steps.js';
import { applyAllReleases, type SnapshotContext, writeMetadata } from './snapshot-context.js';
import { findByIdOrName } from './snapshot-find.js';
import { changeReach, fixCopied } from './snapshot-reach.js';
import { checkSnapshotL1 } from './snapshots.js';

/**
 * Makes a snapshot the current state again (QEMU qcow2_snapshot_goto): one more reference to
 * everything the snapshot reaches (written, synced), then its L1 entries over the active L1
 * table in place (synced), then one reference less to what the old active table reached, with
 * COPIED set again where a refcount dropped to 1. A crash leaves the old or the new state, with
 * leaked clusters at worst.
 */
export async function applySnapshot(c: SnapshotContext, idOrName: string): Promise<void> {
  const sn = findByIdOrName(c.snapshots, idOrName);
  if (!sn) throw new BlockError('ENOENT', 'Failed to load snapshot: No such file or directory', { field: 'snapshot' });
  checkSnapshotL1(sn, c.h);
  if (sn.size !== c.size) {
    throw new BlockError('ENOTSUP', `qcow2: Loading snapshots with different disk size is not implemented (snapshot ${sn.size} bytes, image ${c.size})`, { field: 'disk_size' });
  }
  if (sn.l1Size * 8 > c.l1.length) {
    throw new BlockError('ENOTSUP', `qcow2: the L1 table of snapshot '${sn.name || sn.id}' (${sn.l1Size} entries) is larger than the active one (${c.l1.length / 8})`, { field: 'l1_size' });
  }
  // The snapshot's entries, padded with zeros to the active table's size.
  const next = Buffer.alloc(c.l1.length);
  if (sn.l1Size > 0) Buffer.from(await metadataReader(c.file)(sn.l1TableOffset, sn.l1Size * 8)).copy(next);
  for (let i = 0; i < next.length; i += 8) next.writeUInt32BE(setCopied(next.readUInt32BE(i), false), i);
  await changeReach(c, next, sn.l1TableOffset, 1);
  await writeMetadata(c);
  const old = Buffer.from(c.l1);
  if (next.length > 0) {
    await c.file.write(c.l1Offset, next, true);
    await c.file.flush();
  }
  next.copy(c.l1);
  await changeReach(c, old, c.l1Offset, -1);
  await applyAllReleases(c);
  const l1Changed = await fixCopied(c);
  await writeMetadata(c, l1Changed ? c.l1 : undefined);
}
