// What the qcow2 writer decides for each guest cluster a write touches (writer.ts).

/** One guest cluster of a write: written in place, or newly allocated (with its old entry, to release). */
export interface ClusterPlan {
  /** Guest offset of the cluster. */
  guest: number;
  /** Host offset of the cluster (where its bytes go). */
  host: number;
  /** A new cluster replaces the old one (released once the new entry is on disk). */
  alloc: boolean;
  /** The new cluster lies past everything ever written: its unwritten bytes read as zeros. */
  fresh: boolean;
  /** The L2 entry changes once the data is written. */
  link: boolean;
  /** Guest range written for this cluster: the data plus what is copied around it. */
  cowFrom: number;
  cowTo: number;
  /** Extended L2: the new allocation and zero bitmaps. */
  allocBits: number;
  zeroBits: number;
}
