// The dirty bitmaps of one node: adding, finding and removing them by name, recording every
// write that reaches the node in each, and loading/storing the persistent ones through the
// driver (QEMU keeps them on the BlockDriverState; qcow2 stores them in the image).
import { BlockError } from '../errors.js';
import { checkBitmapName, checkGranularity, defaultGranularity, DirtyBitmap, type DirtyBitmapInfo, type RecordingWatcher } from './dirty-bitmap.js';
import type { GranuleSet } from './granule-set.js';
import { SETTLED } from './settled.js';
import type { DriverInstance } from './types.js';

/** How to make a new bitmap (QEMU block-dirty-bitmap-add's optional arguments). */
export interface AddDirtyBitmapOptions {
  /** Bytes one bit covers: a power of two, 512 B … 2 GiB; default the node's cluster size clamped to 4–64 KiB, else 64 KiB. */
  granularity?: number;
  /** Store the bitmap in the image at close (qcow2 only). Default false. */
  persistent?: boolean;
  /** Create it not recording (QEMU `disabled`). Default false. */
  disabled?: boolean;
}

/** Records of writes in flight kept for reuse: enough for deep queues, bounded after a burst. */
const MAX_POOLED_PENDING = 256;

/**
 * A write in flight that the bitmaps record when it settles: its range and one reaction made
 * once per record, so a write costs no closure of its own.
 */
class PendingRecord {
  offset = 0;
  length = 0;
  readonly settled: () => void;

  constructor(owner: DirtyBitmaps) {
    this.settled = () => {
      owner.record(this.offset, this.length);
      owner.recycle(this);
    };
  }
}

/** The node facts the bitmaps need. */
interface NodeFacts {
  readonly name: string;
  readonly length: number;
  readonly readOnly: boolean;
}

/** Every dirty bitmap of one node. */
export class DirtyBitmaps implements RecordingWatcher {
  /** The bitmaps in order of creation. */
  private list: DirtyBitmap[] = [];
  /** Unnamed bitmaps of jobs (a mirror's): recorded like the others, never listed, found or stored. */
  private internal: DirtyBitmap[] = [];
  /** Both lists in one, for the write path (rebuilt when either changes, which is rare). */
  private recorders: DirtyBitmap[] = [];
  /** Whether {@link recorders} is not empty (a field: the write path's test costs one load). */
  private hasRecorders = false;
  /**
   * The granules of the one bitmap recording, when exactly one is (the common case), and
   * 1 / its granularity: a write inside one granule goes straight to that set, with two fewer
   * objects to load on the way (the list and the bitmap), which is most of what recording cost
   * per write on a fast driver. Null with none or several recording.
   */
  private solo: GranuleSet | null = null;
  private soloPerByte = 0;
  private loaded = false;
  /** Free records of writes in flight (see {@link recordWhenSettled}). */
  private readonly pendingPool: PendingRecord[] = [];

  constructor(
    private readonly node: NodeFacts,
    private instance: DriverInstance,
  ) {}

  /**
   * The node was reopened (QEMU qcow2_reopen_bitmaps_rw/ro): the bitmaps go through `instance`
   * from now on and follow its mode; loaded persistent bitmaps of a node made read-write are
   * marked in use in the image again, as at a read-write open.
   */
  async reopened(instance: DriverInstance, readOnly: boolean): Promise<void> {
    this.instance = instance;
    for (const b of this.list) b.readOnly = readOnly;
    if (!readOnly && this.loaded && this.list.some((b) => b.persistent) && instance.loadBitmaps) await instance.loadBitmaps();
  }

  /** Whether the node has any bitmap (the write path's one test). */
  get active(): boolean {
    return this.hasRecorders;
  }

  /** Records a write, write-zeroes or discard of `[offset, offset+length)` in every recording bitmap. */
  record(offset: number, length: number): void {
    const solo = this.solo;
    if (solo !== null) {
      const perByte = this.soloPerByte;
      const first = Math.floor(offset * perByte);
      // Within one granule (exact: perByte is a power of two): for a granule already dirty, a few loads and one bit test (GranuleSet.addOne).
      if (length > 0 && (offset + length) * perByte <= first + 1) {
        solo.addOne(first);
        return;
      }
    }
    this.recordEach(offset, length);
  }

  /** {@link record} in each bitmap, one by one (a function of its own: `record` stays small enough to inline into the write's completion). */
  private recordEach(offset: number, length: number): void {
    const recorders = this.recorders;
    for (let i = 0; i < recorders.length; i++) recorders[i]!.record(offset, length);
  }

  private setLists(list: DirtyBitmap[], internal: DirtyBitmap[]): void {
    this.list = list;
    this.internal = internal;
    this.recorders = [...list, ...internal];
    this.hasRecorders = this.recorders.length > 0;
    for (const b of this.recorders) b.watchRecording(this);
    this.recordingChanged();
  }

  /** (RecordingWatcher) A bitmap started or stopped recording, or the list changed: the write path's shortcut follows. */
  recordingChanged(): void {
    let only: DirtyBitmap | null = null;
    let recording = 0;
    // a bitmap with a listener on its records (a stream's guard) is told of every write through record()
    let plain = true;
    for (const b of this.recorders) {
      if (b.recording) {
        only = b;
        recording++;
      }
      if (b.listened) plain = false;
    }
    const solo = recording === 1 && plain ? only : null;
    this.solo = solo !== null ? solo.granules : null;
    this.soloPerByte = solo !== null ? 1 / solo.granularity : 0;
  }

  /** Every bitmap (internal ones too) follows a resize of the node to `newSize` bytes. */
  resize(newSize: number): void {
    for (const b of this.list) b.resize(newSize);
    for (const b of this.internal) b.resize(newSize);
  }

  /**
   * Records the range once `done` settles, whether it succeeded or not (a failed write may have
   * written part: QEMU marks it too), before whoever `done` is handed to next sees it settle: the
   * reaction attached here runs ahead of those attached later, so the caller gets `done` itself,
   * with no promise or async hop in between. A `done` already {@link SETTLED} is recorded now.
   */
  recordWhenSettled(done: Promise<void>, offset: number, length: number): void {
    if (done === SETTLED) {
      this.record(offset, length);
      return;
    }
    const pending = this.pendingPool.pop() ?? new PendingRecord(this);
    pending.offset = offset;
    pending.length = length;
    // The derived promise never rejects (the reaction handles both outcomes); the caller handles `done`.
    void done.then(pending.settled, pending.settled);
  }

  /** A {@link PendingRecord} whose range was recorded, for reuse. @internal */
  recycle(pending: PendingRecord): void {
    if (this.pendingPool.length < MAX_POOLED_PENDING) this.pendingPool.push(pending);
  }

  /** The bitmaps, in order of creation. */
  all(): readonly DirtyBitmap[] {
    return this.list;
  }

  /** Public facts of every bitmap (QEMU's `dirty-bitmaps` of query-named-block-nodes). */
  info(): DirtyBitmapInfo[] {
    return this.list.map((b) => b.info());
  }

  /** The bitmap called `name`, or undefined. */
  find(name: string): DirtyBitmap | undefined {
    return this.list.find((b) => b.name === name);
  }

  /** The bitmap called `name`; ENOENT with QEMU's wording when there is none. */
  get(name: string): DirtyBitmap {
    const found = this.find(name);
    if (found === undefined) throw new BlockError('ENOENT', `Dirty bitmap '${String(name)}' not found`, { node: this.node.name, field: 'name' });
    return found;
  }

  /** The granularity a bitmap gets when none is asked for (QEMU's default for this node). */
  defaultGranularity(): number {
    const cluster = this.instance.info?.()?.clusterSize;
    return defaultGranularity(typeof cluster === 'number' ? cluster : undefined);
  }

  /** Makes a new bitmap with every bit clean (QEMU block-dirty-bitmap-add). */
  add(name: string, options: AddDirtyBitmapOptions = {}): DirtyBitmap {
    checkBitmapName(name);
    const granularity = options.granularity === undefined ? this.defaultGranularity() : checkGranularity(options.granularity);
    const persistent = options.persistent === true;
    // QEMU's order: a format that stores no bitmaps refuses first, then the name clash, then the format's own limits.
    if (persistent && !this.instance.canStoreBitmap) {
      throw new BlockError('ENOTSUP', `Can't store persistent bitmaps to ${this.node.name}: Operation not supported`, { node: this.node.name, field: 'persistent' });
    }
    if (this.find(name)) throw new BlockError('EEXIST', `Bitmap already exists: ${name}`, { node: this.node.name, field: 'name' });
    const why = persistent ? this.instance.canStoreBitmap?.(name, granularity) : undefined;
    if (why !== undefined) throw new BlockError('EINVAL', `Can't make bitmap '${name}' persistent in '${this.node.name}': ${why}`, { node: this.node.name, field: 'persistent' });
    const bitmap = new DirtyBitmap(name, this.node.length, { granularity, recording: options.disabled !== true, persistent, readOnly: this.node.readOnly });
    this.setLists([...this.list, bitmap], this.internal);
    return bitmap;
  }

  /**
   * Makes an unnamed bitmap for a job (QEMU bdrv_create_dirty_bitmap with no name): it records
   * every write like the named ones but no query, export or merge sees it. Give it back with
   * {@link releaseInternal}.
   */
  addInternal(granularity: number): DirtyBitmap {
    const bitmap = new DirtyBitmap('', this.node.length, { granularity: checkGranularity(granularity), recording: true, persistent: false });
    this.setLists(this.list, [...this.internal, bitmap]);
    return bitmap;
  }

  /** Drops a bitmap made by {@link addInternal}. */
  releaseInternal(bitmap: DirtyBitmap): void {
    this.setLists(this.list, this.internal.filter((b) => b !== bitmap));
  }

  /** Removes a bitmap (from the image too, at once, if it is stored there: QEMU block-dirty-bitmap-remove). */
  async remove(name: string): Promise<void> {
    const bitmap = this.get(name);
    bitmap.check('remove');
    if (bitmap.persistent && this.instance.removeStoredBitmap) await this.instance.removeStoredBitmap(name);
    this.setLists(this.list.filter((b) => b !== bitmap), this.internal);
  }

  /** Removes a persistent bitmap's copy from the image but keeps it here (a transaction's remove: stored again at close if rolled back). */
  async unstore(bitmap: DirtyBitmap): Promise<void> {
    if (bitmap.persistent && this.instance.removeStoredBitmap) await this.instance.removeStoredBitmap(bitmap.name);
  }

  /** Forgets a bitmap without touching the image (a rolled-back add, a committed transactional remove). */
  drop(bitmap: DirtyBitmap): void {
    this.setLists(this.list.filter((b) => b !== bitmap), this.internal);
  }

  /** Clears every bit of a bitmap (QEMU block-dirty-bitmap-clear). */
  clear(name: string): void {
    const bitmap = this.get(name);
    bitmap.check('modify');
    bitmap.clear();
  }

  /** Starts or stops a bitmap recording writes (QEMU block-dirty-bitmap-enable / -disable). */
  setRecording(name: string, on: boolean): void {
    const bitmap = this.get(name);
    bitmap.check('record');
    bitmap.setRecording(on);
  }

  /**
   * Adds the dirty bits of `sources` (bitmaps of this node or of others of the same size) to the
   * bitmap `target` (QEMU block-dirty-bitmap-merge): every check first, then the union, so a
   * refused merge changes nothing.
   */
  merge(target: string, sources: readonly DirtyBitmap[]): void {
    const into = this.get(target);
    into.check('modify');
    for (const source of sources) {
      source.check('read');
      if (source.size !== into.size) {
        throw new BlockError('EINVAL', `Bitmaps are of different sizes (destination size is ${into.size}, source size is ${source.size}) and can't be merged`, {
          node: this.node.name,
          field: 'bitmaps',
        });
      }
    }
    for (const source of sources) into.mergeFrom(source);
  }

  /** Loads the bitmaps stored in the image, once, after the node opened. */
  async load(): Promise<void> {
    if (this.loaded || !this.instance.loadBitmaps) return;
    this.loaded = true;
    const stored = await this.instance.loadBitmaps();
    const made = stored.map(
      (s) =>
        new DirtyBitmap(s.name, this.node.length, {
          granularity: s.granularity,
          recording: s.recording,
          persistent: true,
          inconsistent: s.inconsistent,
          readOnly: this.node.readOnly,
          ...(s.granules === undefined ? {} : { granules: s.granules }),
        }),
    );
    this.setLists([...made, ...this.list], this.internal);
  }

  /** Stores the persistent bitmaps in the image and marks them no longer in use (at close of a read-write node). */
  async store(): Promise<void> {
    if (this.node.readOnly || !this.instance.storeBitmaps) return;
    await this.instance.storeBitmaps(this.list.filter((b) => b.persistent));
  }
}
