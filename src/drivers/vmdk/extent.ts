import type { FlatExtent } from './flat-extent.js';
import type { SparseExtent } from './sparse-extent.js';

/** One extent of a disk and how its descriptor line names it. */
export interface OpenExtent {
  extent: SparseExtent | FlatExtent;
  /** The descriptor's type (FLAT, SPARSE, VMFS); '' for a monolithic sparse file (as QEMU prints it). */
  type: string;
  /** The descriptor line's access was RDONLY. */
  readOnly: boolean;
  /** The extent file's name, as info prints it. */
  filename: string | undefined;
}
