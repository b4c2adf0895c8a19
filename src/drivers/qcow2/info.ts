import type { BlockNode } from '../../node/node.js';
import type { Qcow2Bitmap } from './bitmaps.js';
import { featureList, type Qcow2Header } from './header.js';
import * as L from './limits.js';
import type { Qcow2Snapshot } from './snapshots.js';

/** What an open qcow2 node tells `info` (qemu-img info's format-specific part, and more). */
export interface Qcow2InfoSource {
  h: Qcow2Header;
  size: number;
  snapshots: Qcow2Snapshot[];
  bitmaps: Qcow2Bitmap[];
  backing: BlockNode | undefined;
  dataNode: BlockNode | undefined;
  l2CacheEntries: number;
  /** The internal snapshot open instead of the current state. */
  snapshot: string | undefined;
}

export function qcow2Info(s: Qcow2InfoSource): Record<string, unknown> {
  const { h } = s;
  return {
    format: 'qcow2',
    version: h.version,
    compat: h.version === 3 ? '1.1' : '0.10',
    virtualSize: s.size,
    clusterSize: h.clusterSize,
    backingFile: h.backingFile,
    backingFormat: h.backingFormat,
    backingNode: s.backing?.name,
    dataFile: h.dataFile,
    dataFileRaw: (h.autoclear & L.AUTOCLEAR_DATA_FILE_RAW) !== 0,
    dataNode: s.dataNode?.name,
    compressionType: h.compressionType,
    extendedL2: h.extendedL2,
    refcountBits: 2 ** h.refcountOrder,
    lazyRefcounts: (h.compatible & L.COMPAT_LAZY_REFCOUNTS) !== 0,
    dirty: (h.incompatible & L.INCOMPAT_DIRTY) !== 0,
    corrupt: (h.incompatible & L.INCOMPAT_CORRUPT) !== 0,
    features: featureList(h),
    snapshots: s.snapshots.map((x) => ({ id: x.id, name: x.name, size: x.size, date: x.date, vmClockNs: x.vmClockNs, vmStateSize: x.vmStateSize })),
    openSnapshot: s.snapshot,
    bitmaps: s.bitmaps.map((b) => ({ name: b.name, granularity: b.granularity, flags: b.flags })),
    l2CacheEntries: s.l2CacheEntries,
  };
}
