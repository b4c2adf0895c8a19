/** What a consistency check found and fixed: the fields and counts of `qemu-img check --output=json`. */
export interface CheckResult {
  /** The image checked (qemu-img: `filename`). */
  filename: string;
  /** Its format (`qcow2`). */
  format: string;
  /** Errors that kept the check from completing (I/O errors, refcount blocks it could not read). */
  checkErrors: number;
  /** Offset just past the last cluster that is used or has a refcount. */
  imageEndOffset: number;
  /** Clusters of the virtual disk. */
  totalClusters: number;
  /** Guest clusters the active layer allocates (data, preallocated zero, compressed). */
  allocatedClusters: number;
  /** Allocated clusters not stored right after the previous one of their L2 table. */
  fragmentedClusters: number;
  /** Allocated clusters stored compressed. */
  compressedClusters: number;
  /** Refcounts too low, bad offsets, OFLAG_COPIED mismatches, reserved bits: data may be at risk. */
  corruptions: number;
  /** Clusters whose refcount is higher than their uses: wasted space only. */
  leaks: number;
  /** Corruptions the repair fixed. */
  corruptionsFixed: number;
  /** Leaks the repair fixed. */
  leaksFixed: number;
}

/** Repair mode: `leaks` lowers leaked refcounts; `all` also fixes corruptions (as qemu-img check -r). */
export type RepairMode = 'leaks' | 'all';

/** Options of one check pass (a driver's `check`); `Node` is the node class of the layer. */
export interface CheckOptions<Node = unknown> {
  /** Fix leaks, or leaks and corruptions; absent: report only. */
  repair?: RepairMode;
  /** Name reported in the result. */
  filename?: string;
  /** Receives one line per finding, worded like qemu-img's messages on stderr. */
  log?: (line: string) => void;
  /** Opens a further protocol node the check reads (vmdk's extent files), read-only; the check unrefs it. Given by checkImage. */
  openNode?: (options: Readonly<Record<string, unknown>>) => Promise<Node>;
}

/** A result with every count at zero. */
export function emptyResult(filename: string, format: string): CheckResult {
  return {
    filename,
    format,
    checkErrors: 0,
    imageEndOffset: 0,
    totalClusters: 0,
    allocatedClusters: 0,
    fragmentedClusters: 0,
    compressedClusters: 0,
    corruptions: 0,
    leaks: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
  };
}
