import type { BlockNode } from '../../node/node.js';
import { readBitmapDirectory } from './bitmaps.js';
import { L2Cache } from './l2-cache.js';
import { loadL1, metadataReader, openHeader, openRefcounts } from './open-steps.js';
import { readSnapshots } from './snapshots.js';
import { ClusterMap } from './tables.js';

/** The options that shape an open image's in-memory state (kept for a reopen). */
export interface ImageOpenOptions {
  readonly snapshot?: string | undefined;
  readonly refcountCacheSize: number;
  readonly l2CacheSize: number;
}

/**
 * Steps 1–5 of an open over the image's file: header (repaired if dirty, when writable),
 * snapshots, bitmap directory, L1 table, refcounts (writable only) and the cluster map. An open
 * and a reopen run the same steps: a reopen starts afresh from what is on disk.
 */
export async function readImage(file: BlockNode, writable: boolean, nodeName: string, options: ImageOpenOptions) {
  const h = await openHeader(file, writable, nodeName);
  const read = metadataReader(file);
  const snapshots = await readSnapshots(h, read);
  const bitmaps = await readBitmapDirectory(h, read);
  const { l1, l1Offset } = await loadL1(file, h, snapshots, options.snapshot, nodeName);
  const refcounts = writable ? await openRefcounts(file, h, options.refcountCacheSize) : undefined;
  const l2Cache = new L2Cache(h.clusterSize, read, options.l2CacheSize);
  const fileLimit = () => Math.max(file.length, refcounts?.end ?? 0);
  const tables = new ClusterMap(h, l1, l1Offset, fileLimit, l2Cache);
  return { h, size: h.size, snapshots, bitmaps, l1, l1Offset, refcounts, l2Cache, tables };
}
