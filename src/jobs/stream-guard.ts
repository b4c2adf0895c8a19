// Keeps a stream's copy and the guest's writes to the same image apart (QEMU gets this from
// copy-on-read's serialising requests): a write that arrives while a piece is being copied
// waits until the copy is written, and a piece a write finished into while it was read is read
// again, so the copy never puts older data over newer.
import type { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { BlockNode } from '../node/node.js';

const RESOLVED = Promise.resolve();

/** The guard of one stream job over its top image (a write hook and a bitmap, both removed by {@link dispose}). */
export class CopyGuard {
  private readonly bitmap: DirtyBitmap;
  private start = 0;
  private end = 0;
  private done: Promise<void> | null = null;
  private finish: () => void = () => {};
  private writingOwn = false;
  private disposed = false;
  /** Writes that passed the hook and have not settled yet, as [offset, end) pairs (flat, few). */
  private readonly inFlight: number[] = [];
  /** Wakes {@link begin} once no write in flight overlaps its piece. */
  private settled: (() => void) | null = null;
  private readonly hook = (offset: number, length: number): Promise<void> => {
    const done = this.done;
    // The copy's own write of its piece passes.
    const own = this.writingOwn && offset === this.start && length === this.end - this.start;
    if (done === null || own || offset >= this.end || offset + length <= this.start) {
      this.inFlight.push(offset, offset + length);
      return RESOLVED;
    }
    return done.then(() => {
      this.inFlight.push(offset, offset + length);
    });
  };

  /** EBUSY when another user (a backup) already hooks the node's writes. */
  constructor(
    private readonly node: BlockNode,
    name: string,
  ) {
    let unique = name;
    for (let i = 1; node.bitmaps.find(unique) !== undefined; i++) unique = `${name}-${i}`;
    node.setBeforeWrite(this.hook);
    const bitmap = node.bitmaps.add(unique);
    // Every write that passed the hook is recorded in the node's bitmaps once it settles: that is where it leaves the in-flight list.
    bitmap.onRecord((offset, length) => this.settle(offset, offset + length));
    this.bitmap = bitmap;
  }

  /**
   * A piece is about to be read: writes arriving from now on that overlap it wait, and this
   * resolves once the overlapping writes already under way have settled.
   */
  async begin(offset: number, length: number): Promise<void> {
    this.bitmap.markClean(offset, length);
    this.start = offset;
    this.end = offset + length;
    this.done = new Promise<void>((resolve) => (this.finish = resolve));
    while (this.overlapping()) await new Promise<void>((resolve) => (this.settled = resolve));
  }

  private overlapping(): boolean {
    const f = this.inFlight;
    for (let i = 0; i < f.length; i += 2) if (f[i] < this.end && this.start < f[i + 1]) return true;
    return false;
  }

  private settle(start: number, end: number): void {
    const f = this.inFlight;
    for (let i = 0; i < f.length; i += 2) {
      if (f[i] === start && f[i + 1] === end) {
        f.splice(i, 2);
        break;
      }
    }
    const wake = this.settled;
    if (wake !== null && !this.overlapping()) {
      this.settled = null;
      wake();
    }
  }

  /** A write finished into the piece since {@link begin}: what was read may be older than the image. */
  get changed(): boolean {
    return this.bitmap.nextDirtyExtent(this.start, this.end) !== null;
  }

  /** Runs the copy's own write of the piece. */
  async writeOwn(write: () => Promise<void>): Promise<void> {
    this.writingOwn = true;
    try {
      await write();
    } finally {
      this.writingOwn = false;
    }
  }

  /** The piece is done: writes held back go on. */
  endPiece(): void {
    this.done = null;
    this.finish();
  }

  /** Removes the hook and the bitmap (once). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.endPiece();
    this.node.setBeforeWrite(null);
    this.node.bitmaps.drop(this.bitmap);
  }
}
