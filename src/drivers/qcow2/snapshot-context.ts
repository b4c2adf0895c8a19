import type { BlockNode } from '../../node/node.js';
import { loopTurn } from '../../platform/event-loop.js';
import type { Qcow2Header } from './header.js';
import type { L2Cache } from './l2-cache.js';
import type { Refcounts } from './refcounts.js';
import { settleAll } from './settle.js';
import type { Qcow2Snapshot } from './snapshots.js';

/**
 * What the snapshot operations work on: the open image's metadata, used only while the writer
 * is drained (no guest request in flight, metadata lock held, nothing dirty).
 */
export interface SnapshotContext {
  readonly h: Qcow2Header;
  readonly file: BlockNode;
  readonly refcounts: Refcounts;
  readonly cache: L2Cache;
  /** The active L1 table (shared with the read path and the writer, changed in place). */
  readonly l1: Buffer;
  readonly l1Offset: number;
  /** The snapshot table as in memory (changed in place: info lists it). */
  readonly snapshots: Qcow2Snapshot[];
  /** Guest disk size. */
  readonly size: number;
}

/**
 * Writes dirty refcount blocks, dirty L2 tables and `l1` (the whole active L1 table, if given)
 * together, then syncs. Refcounts and the COPIED flags that follow from them change in one
 * batch: issued together, so that a crash leaves either state, or (only while both writes are
 * in flight) a mix that qemu-img check calls an OFLAG_COPIED error. QEMU orders them refcounts
 * first, with the same mix possible over a longer window.
 */
export async function writeMetadata(c: SnapshotContext, l1?: Buffer): Promise<void> {
  const tables = await c.cache.dirtyTables();
  const writes: Promise<void>[] = [c.refcounts.writeBack()];
  for (const [offset, table] of tables) writes.push(c.file.write(offset, table, true).then(() => c.cache.markClean(offset)));
  if (l1 && l1.length > 0) writes.push(c.file.write(c.l1Offset, l1, true));
  await settleAll(writes);
  await c.file.flush();
}

/**
 * Applies every deferred decrement in memory. A cluster a guest read is still reading keeps its
 * reference until the read ends (Refcounts.pin): this waits for those reads, so that the COPIED
 * flags computed next see the final refcounts.
 */
export async function applyAllReleases(c: SnapshotContext): Promise<void> {
  await c.refcounts.applyReleases();
  while (c.refcounts.hasReleases) {
    await loopTurn();
    await c.refcounts.applyReleases();
  }
}

/** Applies the deferred refcount decrements (their references are gone from the disk), writes them and syncs. */
export async function applyReleases(c: SnapshotContext): Promise<void> {
  if (!c.refcounts.hasReleases) return;
  await c.refcounts.applyReleases();
  await c.refcounts.writeBack();
  await c.file.flush();
}
