/**
 * A backup's sync bitmap (QEMU's frozen bitmap and its successor): while the job runs the
 * bitmap is busy and what the guest writes is also noted in a successor; when the job ends the
 * bitmap becomes what `bitmap-mode` asks — on success (or always): only what was written during
 * the job (plus, after a failure under `always`, what was not copied); otherwise it keeps every
 * bit it had and gains the writes, so nothing is lost.
 */
import { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { GranuleSet } from '../node/granule-set.js';

/** QAPI BitmapSyncMode. */
export type BitmapSyncMode = 'on-success' | 'always' | 'never';

/** The bitmap a backup reads (sync=bitmap) or writes back (any sync with a bitmap). */
export class BackupSyncBitmap {
  /** Writes during the job, at the bitmap's granularity (QEMU's successor). */
  private readonly successor: DirtyBitmap;

  constructor(
    readonly bitmap: DirtyBitmap,
    readonly mode: BitmapSyncMode,
  ) {
    // QEMU's successor records only if its parent did.
    this.successor = new DirtyBitmap(`${bitmap.name}.successor`, bitmap.size, { granularity: bitmap.granularity, recording: bitmap.recording, persistent: false });
    bitmap.acquire();
  }

  /** Notes a guest write of `[offset, offset+length)` (called before every write reaches the node). */
  noteWrite(offset: number, length: number): void {
    this.successor.record(offset, length);
  }

  /**
   * The job ended (`succeeded` or not); `uncopied` are the copy clusters left (cluster size
   * `clusterSize`). Sets the bitmap's bits as `bitmap-mode` asks.
   */
  settle(succeeded: boolean, uncopied: GranuleSet, clusterSize: number): void {
    const sync = (succeeded || this.mode === 'always') && this.mode !== 'never';
    // The bitmap kept recording during the job, so it already holds its old bits and the writes: QEMU's reclaim.
    if (!sync) return;
    this.bitmap.granules.replaceWith(this.successor.granules);
    if (!succeeded) for (const [first, end] of uncopied.runs()) this.bitmap.markDirty(first * clusterSize, Math.min(this.bitmap.size, end * clusterSize) - first * clusterSize);
  }

  /** Gives the bitmap back (no longer busy). */
  release(): void {
    this.bitmap.release();
  }
}
