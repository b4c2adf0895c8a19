// Whether an image was made with preallocation=metadata (QEMU qcow2_detect_metadata_preallocation):
// its clusters are referenced but the file has holes under them. Only then does block status
// ask the file about each data cluster (QEMU's BDRV_BLOCK_RECURSE); otherwise a data cluster is
// data without two lseek calls per extent.
import type { BlockNode } from '../../node/node.js';
import { reftableEntryOffset } from './entries.js';
import type { Qcow2Header } from './header.js';
import { readClamped } from './open-steps.js';
import { entriesPerBlock, readEntry } from './refcount-entries.js';

/**
 * True when more clusters are referenced than the file has allocated on disk, with QEMU's margin
 * (10 %, at least 2 clusters). False where the file cannot tell its allocation (not a local
 * file) and on any read failure (QEMU treats an error as "not preallocated"). A writable image
 * calls it with its metadata written back (the refcounts on disk are current).
 */
export async function detectMetadataPreallocation(file: BlockNode, h: Qcow2Header): Promise<boolean> {
  try {
    const allocated = await file.allocatedSize();
    if (allocated === undefined) return false;
    const cs = h.clusterSize;
    const realClusters = Math.floor(allocated / cs);
    const threshold = Math.max(Math.floor((realClusters * 10) / 9), realClusters + 2);
    const endCluster = Math.ceil(file.length / cs);
    return (await countOnDisk(file, h, endCluster, threshold)) >= threshold;
  } catch {
    return false;
  }
}

/** Clusters below `end` with a refcount above 0 on disk, counted until `threshold`. */
async function countOnDisk(file: BlockNode, h: Qcow2Header, end: number, threshold: number): Promise<number> {
  const cs = h.clusterSize;
  const per = entriesPerBlock(cs, h.refcountOrder);
  // The table's size was checked against MAX_REFTABLE_BYTES when the header was read.
  const table = new Uint8Array(h.refcountTableClusters * cs);
  await readClamped(file, h.refcountTableOffset, table);
  const tv = new DataView(table.buffer);
  const block = new Uint8Array(cs);
  let blockAt = -1;
  let count = 0;
  const blocks = Math.min(table.length / 8, Math.ceil(end / per));
  for (let b = 0; b < blocks && count < threshold; b++) {
    const at = reftableEntryOffset(tv.getUint32(b * 8), tv.getUint32(b * 8 + 4));
    if (at === 0) continue; // no block: every cluster it would cover has refcount 0
    // QEMU refuses a misaligned refcount block as corruption: the detection then says no.
    if (at % cs !== 0) return 0;
    // Entries pointing at one block are read once (a hostile table cannot multiply the reads).
    if (at !== blockAt) {
      await readClamped(file, at, block);
      blockAt = at;
    }
    const n = Math.min(per, end - b * per);
    count += nonZeroEntries(block, n, h.refcountOrder);
  }
  return count;
}

/**
 * Entries of the first `n` of a refcount block that are not 0. Widths of whole bytes count the
 * zero entries through the typed array's indexOf (native, no per-entry step in JS: the block of
 * a large image has 32,768 entries, and a per-entry loop here costs an optimizing compile at
 * every first block status); a zero entry is all zero bytes whatever the byte order.
 */
function nonZeroEntries(block: Uint8Array, n: number, order: number): number {
  const words =
    order === 3 ? block
    : order === 4 ? new Uint16Array(block.buffer, block.byteOffset, block.length / 2)
    : order === 5 ? new Uint32Array(block.buffer, block.byteOffset, block.length / 4)
    : undefined;
  if (words !== undefined && block.byteOffset % 4 === 0) {
    let zeros = 0;
    for (let i = words.indexOf(0); i !== -1 && i < n; i = words.indexOf(0, i + 1)) zeros++;
    return n - zeros;
  }
  let count = 0;
  for (let i = 0; i < n; i++) if (readEntry(block, i, order) !== 0) count++;
  return count;
}
