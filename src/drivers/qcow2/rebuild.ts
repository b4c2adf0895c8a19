import type { BlockNode } from '../../node/node.js';
import { extendFreeRun, newFreeRun } from './free-run.js';
import type { Qcow2Header } from './header.js';
import { entriesPerBlock, type RefcountArray } from './refcount-entries.js';

/**
 * First run of `count` clusters with refcount 0 at or after `from.cluster`, growing `rc` past
 * its end when there is none; marks them used (refcount 1) and returns the first one
 * (QEMU alloc_clusters_imrt). `from.cluster` moves to the first free cluster seen.
 */
export function allocateClusters(rc: RefcountArray, count: number, from: { cluster: number }): number {
  const run = newFreeRun(from.cluster);
  const end = extendFreeRun(rc, from.cluster, rc.size, count, run);
  if (run.firstFree >= 0) from.cluster = run.firstFree;
  if (run.length < count) rc.grow(end + count - run.length);
  const start = end - run.length;
  for (let i = 0; i < count; i++) rc.set(start + i, 1);
  return start;
}

/**
 * Writes a whole new refcount structure for the refcounts `rc` holds (QEMU
 * rebuild_refcount_structure): a refcount block for each range that has a used cluster and a
 * refcount table, in clusters free in `rc` (their own refcounts included), then points the
 * header at the new table, last, between flushes. The old structure is left in place (the
 * caller's next pass finds it leaked). Returns the new table's offset and bytes.
 */
export async function rebuildRefcountStructure(
  file: Pick<BlockNode, 'write' | 'flush'>,
  h: Pick<Qcow2Header, 'clusterSize' | 'refcountOrder'>,
  rc: RefcountArray,
): Promise<{ offset: number; clusters: number; bytes: Uint8Array }> {
  const cs = h.clusterSize;
  const perBlock = entriesPerBlock(cs, h.refcountOrder);
  const reftable: number[] = [];
  let reftableEntries = 0;

  /** Writes the refcount blocks covering [first, end) clusters; true when the table had to grow. */
  const writeRefblocks = async (first: number, end: number): Promise<boolean> => {
    let grown = false;
    const free = { cluster: 0 };
    for (let cluster = first; cluster < end; cluster++) {
      if (rc.get(cluster) === 0) continue;
      const index = Math.floor(cluster / perBlock);
      const blockStart = index * perBlock;
      if (reftableEntries <= index) {
        // The table grows in whole clusters, as it is stored.
        reftableEntries = (Math.ceil(((index + 1) * 8) / cs) * cs) / 8;
        while (reftable.length < reftableEntries) reftable.push(0);
        grown = true;
      }
      if (reftable[index] === 0) {
        // Never place a block inside a range whose block is already written.
        if (free.cluster < blockStart) free.cluster = blockStart;
        const at = allocateClusters(rc, 1, free);
        if (at >= end) end = at + 1; // the block that counts this new block must be written too
        reftable[index] = at * cs;
      }
      await file.write(reftable[index], rc.block(blockStart, perBlock, cs, h.refcountOrder), true);
      cluster = blockStart + perBlock - 1;
    }
    return grown;
  };

  await writeRefblocks(0, rc.size);
  let tableCluster = -1;
  let tableClusters = 0;
  for (;;) {
    tableClusters = Math.ceil((reftableEntries * 8) / cs);
    tableCluster = allocateClusters(rc, tableClusters, { cluster: 0 });
    // Placing the table changed refcounts: rewrite the blocks of its range.
    const grown = await writeRefblocks(tableCluster, tableCluster + tableClusters);
    if (!grown) break;
    for (let i = 0; i < tableClusters; i++) rc.set(tableCluster + i, 0);
  }

  const bytes = new Uint8Array(tableClusters * cs);
  const view = new DataView(bytes.buffer);
  reftable.forEach((offset, i) => {
    view.setUint32(i * 8, Math.floor(offset / 2 ** 32));
    view.setUint32(i * 8 + 4, offset % 2 ** 32);
  });
  const offset = tableCluster * cs;
  await file.write(offset, bytes, true);
  // Everything the new table points to is on disk before the header points to it.
  await file.flush();
  const header = new Uint8Array(12);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, Math.floor(offset / 2 ** 32));
  hv.setUint32(4, offset % 2 ** 32);
  hv.setUint32(8, tableClusters);
  await file.write(48, header);
  await file.flush();
  return { offset, clusters: tableClusters, bytes };
}
