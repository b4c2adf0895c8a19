// One dirty bitmap (QEMU: BdrvDirtyBitmap): which granules of a node were written since the
// bitmap was created or cleared, with QEMU's flags and the checks its QMP commands make.
import { BlockError } from '../errors.js';
import { GranuleSet } from './granule-set.js';

/** Smallest and largest granularity QEMU accepts (block-dirty-bitmap-add). */
export const MIN_BITMAP_GRANULARITY = 512;
export const MAX_BITMAP_GRANULARITY = 2 ** 31;
/** Longest bitmap name in bytes (QEMU BDRV_BITMAP_MAX_NAME_SIZE). */
export const MAX_BITMAP_NAME_BYTES = 1023;

/**
 * What an operation does with a bitmap, for the checks QEMU makes (bdrv_dirty_bitmap_check):
 * `modify` (bits or flags; refused while busy, read-only or inconsistent), `remove` (refused
 * while busy or read-only), `record` (recording on or off; refused while busy or inconsistent,
 * QEMU's BDRV_BITMAP_ALLOW_RO), `read` (an export, a merge source, a backup; refused while inconsistent).
 */
export type BitmapUse = 'modify' | 'remove' | 'record' | 'read';

/** The public facts of a bitmap (QEMU's BlockDirtyInfo, in camelCase). */
export interface DirtyBitmapInfo {
  /** The bitmap's name, unique on its node. */
  name: string;
  /** Dirty bytes: dirty granules × granularity (as QEMU counts them). */
  count: number;
  /** Bytes one bit covers. */
  granularity: number;
  /** Writes are being recorded (QEMU `recording`; false after disable). */
  recording: boolean;
  /** In use by an export or a job: changes are refused. */
  busy: boolean;
  /** Stored in the image (qcow2) at close. */
  persistent: boolean;
  /** Found marked in use in the image (a crash while it was open): only removal is allowed. */
  inconsistent: boolean;
}

/** A run of bytes with the same dirtiness, from a bitmap. */
export interface DirtyExtent {
  /** Offset of the run's first byte. */
  offset: number;
  /** Length of the run in bytes (> 0). */
  length: number;
}

/** Checks a bitmap name as QEMU does; returns it. */
export function checkBitmapName(name: unknown, field = 'name'): string {
  if (typeof name !== 'string' || name.length === 0) throw new BlockError('EINVAL', `${field}: a bitmap name must be a non-empty string`, { field });
  if (new TextEncoder().encode(name).length > MAX_BITMAP_NAME_BYTES) {
    throw new BlockError('EINVAL', `${field}: bitmap name is longer than ${MAX_BITMAP_NAME_BYTES} bytes`, { field });
  }
  return name;
}

/** Checks a granularity as QEMU does (a power of two from 512 B to 2 GiB); returns it. */
export function checkGranularity(granularity: unknown, field = 'granularity'): number {
  const g = granularity as number;
  if (!Number.isInteger(g) || g < MIN_BITMAP_GRANULARITY || g > MAX_BITMAP_GRANULARITY || 2 ** Math.round(Math.log2(g)) !== g) {
    throw new BlockError('EINVAL', `${field}: granularity must be a power of 2 between ${MIN_BITMAP_GRANULARITY} and ${MAX_BITMAP_GRANULARITY}, not ${String(granularity)}`, { field });
  }
  return g;
}

/**
 * The default granularity for a node (QEMU bdrv_get_default_bitmap_granularity): its cluster
 * size clamped to 4 KiB … 64 KiB, or 64 KiB when it has none.
 */
export function defaultGranularity(clusterSize: number | undefined): number {
  if (clusterSize === undefined || !(clusterSize > 0)) return 65536;
  return Math.min(65536, Math.max(4096, clusterSize));
}

/** The state a bitmap is created with. */
export interface DirtyBitmapState {
  /** Bytes one bit covers (checked). */
  granularity: number;
  /** Recording writes. */
  recording: boolean;
  /** Stored in the image at close. */
  persistent: boolean;
  /** Loaded marked in use (see {@link DirtyBitmapInfo.inconsistent}). */
  inconsistent?: boolean;
  /** On a read-only node: bits and flags cannot change. */
  readOnly?: boolean;
  /** The bits to start with (loaded from the image); empty otherwise. */
  granules?: GranuleSet;
}

/** Told when a bitmap starts or stops recording (its node's bitmaps keep their write path's shortcut up to date). */
export interface RecordingWatcher {
  recordingChanged(): void;
}

/** One named dirty bitmap over a node of `size` bytes. */
export class DirtyBitmap {
  /** Bytes one bit covers. */
  readonly granularity: number;
  /** log2 of the granularity. */
  private readonly shift: number;
  /** 1 / granularity, exact (a power of two): granule numbers by a multiply, not a division, on the write path. */
  private readonly perByte: number;
  /** The dirty granules. */
  readonly granules: GranuleSet;
  private recordingFlag: boolean;
  /** Stored in the image at close. */
  persistent: boolean;
  /** Found marked in use in the image. */
  readonly inconsistent: boolean;
  /** Bits and flags cannot change (a bitmap of a read-only image; follows a reopen of its node). */
  readOnly: boolean;
  private users = 0;
  private watcher: RecordingWatcher | null = null;
  private recorded: ((offset: number, length: number) => void) | null = null;

  constructor(
    /** The bitmap's name. */
    readonly name: string,
    /** Size of the node in bytes (it follows the node's resizes). */
    public size: number,
    state: DirtyBitmapState,
  ) {
    this.granularity = checkGranularity(state.granularity);
    this.shift = Math.round(Math.log2(this.granularity));
    this.perByte = 1 / this.granularity;
    const granules = Math.ceil(size / this.granularity);
    if (state.granules !== undefined && state.granules.size !== granules) {
      throw new BlockError('EINVAL', `bitmap '${name}': ${state.granules.size} granules given for a node that needs ${granules}`, { field: 'granules' });
    }
    this.granules = state.granules ?? new GranuleSet(granules);
    this.persistent = state.persistent;
    this.inconsistent = state.inconsistent ?? false;
    // QEMU loads an inconsistent bitmap disabled: its bits mean nothing, so it records nothing.
    // Always a boolean (the write path tests it with ===, one compare, not a generic truth test).
    this.recordingFlag = Boolean(state.recording) && !this.inconsistent;
    this.readOnly = state.readOnly ?? false;
  }

  /** Writes are recorded. */
  get recording(): boolean {
    return this.recordingFlag;
  }

  /** An export or job holds the bitmap. */
  get busy(): boolean {
    return this.users > 0;
  }

  /** Dirty bytes as QEMU counts them (dirty granules × granularity). */
  get count(): number {
    return this.granules.count * this.granularity;
  }

  /** The public facts. */
  info(): DirtyBitmapInfo {
    return {
      name: this.name,
      count: this.count,
      granularity: this.granularity,
      recording: this.recordingFlag,
      busy: this.busy,
      persistent: this.persistent,
      inconsistent: this.inconsistent,
    };
  }

  /** Refuses `use` when the bitmap's state forbids it (QEMU bdrv_dirty_bitmap_check), with QEMU's wording. */
  check(use: BitmapUse): void {
    if (use !== 'read' && this.busy) {
      throw new BlockError('EBUSY', `Bitmap '${this.name}' is currently in use by another operation and cannot be used`, { field: 'name' });
    }
    if ((use === 'modify' || use === 'remove') && this.readOnly) {
      throw new BlockError('EROFS', `Bitmap '${this.name}' is readonly and cannot be modified`, { field: 'name' });
    }
    if (use !== 'remove' && this.inconsistent) {
      throw new BlockError('EINVAL', `Bitmap '${this.name}' is inconsistent and cannot be used (remove it with block-dirty-bitmap-remove)`, { field: 'name' });
    }
  }

  /**
   * Follows a resize of the node (QEMU bdrv_dirty_bitmap_truncate): bits past a smaller size go;
   * a grown part starts clean (QEMU 7.2 marks nothing there either).
   */
  resize(newSize: number): void {
    this.size = newSize;
    this.granules.resize(Math.ceil(newSize / this.granularity));
  }

  /** Marks bytes `[offset, offset+length)` dirty if recording (the write path). */
  record(offset: number, length: number): void {
    if (this.recordingFlag === true) this.markDirty(offset, length);
    if (this.recorded !== null) this.recorded(offset, length);
  }

  /**
   * Calls `fn` after every write this bitmap is told of (recording or not), once the write
   * settled: a job's own bookkeeping of writes in flight (a stream's copy guard). Null removes it.
   */
  onRecord(fn: ((offset: number, length: number) => void) | null): void {
    this.recorded = fn;
    this.watcher?.recordingChanged();
  }

  /** Whether something listens to this bitmap's records ({@link onRecord}): then every write must go through {@link record}. */
  get listened(): boolean {
    return this.recorded !== null;
  }

  /** Marks bytes dirty whether or not recording (merge, set). */
  markDirty(offset: number, length: number): void {
    if (!(length > 0)) return;
    const first = Math.floor(offset * this.perByte);
    const last = Math.floor((offset + length - 1) * this.perByte);
    if (first === last) this.granules.addOne(first);
    else this.granules.add(first, last + 1);
  }

  /** Marks the granules wholly inside `[offset, offset+length)` clean (a granule only partly covered stays dirty). */
  markClean(offset: number, length: number): void {
    const first = Math.ceil(offset / this.granularity);
    const end = offset + length >= this.size ? this.granules.size : Math.floor((offset + length) / this.granularity);
    if (end > first) this.granules.remove(first, end);
  }

  /** Clears every bit. */
  clear(): void {
    this.granules.clear();
  }

  /** Starts (true) or stops recording writes. */
  setRecording(on: boolean): void {
    const was = this.recordingFlag;
    this.recordingFlag = Boolean(on);
    if (this.recordingFlag !== was) this.watcher?.recordingChanged();
  }

  /** Tells `watcher` (the node's bitmaps) of every later start or stop of recording. */
  watchRecording(watcher: RecordingWatcher): void {
    this.watcher = watcher;
  }

  /** Adds the dirty bytes of `source` (any granularity; same node size or smaller). */
  mergeFrom(source: DirtyBitmap): void {
    if (source.granularity === this.granularity) {
      this.granules.unionWith(source.granules);
      return;
    }
    for (const [first, end] of source.granules.runs()) {
      this.markDirty(first * source.granularity, Math.min(source.size, end * source.granularity) - first * source.granularity);
    }
  }

  /** Whether the byte at `offset` is dirty. */
  isDirty(offset: number): boolean {
    return this.granules.has(Math.floor(offset * this.perByte));
  }

  /**
   * The run starting at `offset` with the same dirtiness, up to `end` (bytes): what NBD block
   * status on `qemu:dirty-bitmap:NAME` answers.
   */
  extentAt(offset: number, end: number): { dirty: boolean; length: number } {
    const g = Math.floor(offset * this.perByte);
    const dirty = this.granules.has(g);
    const limit = Math.ceil(end * this.perByte);
    const runEnd = this.granules.next(g + 1, !dirty, limit);
    return { dirty, length: Math.min(end, runEnd * this.granularity) - offset };
  }

  /** The first dirty run that ends after `offset`, clipped to `[offset, end)`, or null. */
  nextDirtyExtent(offset: number, end: number): DirtyExtent | null {
    const limit = Math.ceil(Math.min(end, this.size) / this.granularity);
    const first = this.granules.next(Math.floor(offset / this.granularity), true, limit);
    if (first >= limit) return null;
    const stop = this.granules.next(first, false, limit);
    const start = Math.max(offset, first * this.granularity);
    return { offset: start, length: Math.min(end, this.size, stop * this.granularity) - start };
  }

  /** Takes the bitmap for an export or a job (busy until {@link release}). */
  acquire(): void {
    this.users++;
  }

  /** Gives back what {@link acquire} took. */
  release(): void {
    if (this.users > 0) this.users--;
  }

  /** Bits of granule numbers — how many bits `shift` stands for (for stores). */
  get granularityBits(): number {
    return this.shift;
  }
}
