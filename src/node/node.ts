import { BlockError, fromErrno, valueText } from '../errors.js';
import { DirtyBitmaps } from './dirty-bitmaps.js';
import type { BlockStatus, DriverInstance, GenericBlockDriver, InternalSnapshots, TruncateOptions } from './types.js';
import { mergedExtents } from './extents.js';
import { OverlapQueue } from './overlap-queue.js';
import { runPieces } from './pieces.js';
import { writeBlocker } from './write-blocker.js';

/** A copy-before-write hook: resolves when the range may be overwritten. */
export type BeforeWriteHook = (offset: number, length: number) => Promise<void>;

const ZERO_CHUNK = 1 << 20;
/** Largest request alignment a driver may report (1 GiB): far above any real device's. */
export const MAX_ALIGNMENT = 2 ** 30;
let zeroBuffer: Uint8Array | undefined;
function zeroes(length: number): Uint8Array {
  zeroBuffer ??= new Uint8Array(ZERO_CHUNK);
  return zeroBuffer.subarray(0, length);
}

/**
 * One open node of the graph (QEMU: BlockDriverState): a driver instance, its children by role,
 * a reference count. It does the generic work once for every driver: bounds, read-only,
 * alignment (read-modify-write) and splitting over the driver's maximum transfer.
 */
export class BlockNode {
  /** The node's name (QEMU node-name), unique within its layer. */
  readonly name: string;
  /** The driver that opened the node. */
  readonly driver: GenericBlockDriver<BlockNode>;
  /** Whether the node refuses writes (changed only by {@link reopen}). */
  get readOnly(): boolean {
    return this.ro;
  }
  /** The node's children by role (`file`, `backing`, `data-file`, …). */
  readonly children: ReadonlyMap<string, BlockNode>;
  /** Options as given (for info and error messages). */
  readonly options: Readonly<Record<string, unknown>>;
  /** The node's dirty bitmaps: every write, write-zeroes and discard that reaches the node is recorded in them. */
  readonly bitmaps: DirtyBitmaps;
  private instance: DriverInstance;
  private ro: boolean;
  private refs = 1;
  private closed = false;
  private readonly alignMask: number;
  private readonly maxTransfer: number;
  private readonly tracked: OverlapQueue | null;
  /** Runs before a write of any kind reaches the driver (copy-before-write of a backup job); null: none. */
  private beforeWrite: BeforeWriteHook | null = null;
  /** A flush's failure as a BlockError (made once per node, not per flush). */
  private readonly flushFailed = (e: unknown): never => {
    throw this.driverError(e, 'flush');
  };

  constructor(
    name: string,
    driver: GenericBlockDriver<BlockNode>,
    instance: DriverInstance,
    children: ReadonlyMap<string, BlockNode>,
    readOnly: boolean,
    options: Record<string, unknown>,
    private readonly onClosed?: () => void,
  ) {
    this.name = name;
    this.driver = driver;
    this.instance = instance;
    this.children = children;
    this.ro = readOnly;
    this.options = options;
    const given: number | undefined = instance.alignment;
    const align = given === 0 || given === undefined ? 1 : given; // 0 or absent: no alignment
    // Range first: the power-of-two test below uses 32-bit bitwise arithmetic.
    if (!Number.isInteger(align) || align < 1 || align > MAX_ALIGNMENT || align & (align - 1)) {
      throw new BlockError('EINVAL', `driver ${driver.name}: alignment ${align} is not a power of two between 1 and ${MAX_ALIGNMENT}`, { node: name });
    }
    this.alignMask = align - 1;
    this.maxTransfer = instance.maxTransfer && instance.maxTransfer > 0 ? instance.maxTransfer : 0;
    // Overlapping writes only need ordering when read-modify-write can happen.
    this.tracked = align > 1 ? new OverlapQueue() : null;
    this.bitmaps = new DirtyBitmaps(this, instance);
  }

  /** Virtual size in bytes. */
  get length(): number {
    return this.instance.length();
  }

  /** Request alignment of the driver. */
  get alignment(): number {
    return this.alignMask + 1;
  }

  /** The child in `role` (`file`, `backing`, …), if any. */
  child(role: string): BlockNode | undefined {
    return this.children.get(role);
  }

  /** Format-specific facts from the driver (cluster size, snapshots, …). */
  info(): Record<string, unknown> {
    return this.instance.info?.() ?? {};
  }

  /** The read-only node a write on this one would reach, if any (QEMU's "Block node is read-only"; see write-blocker.ts). */
  writeBlocker(): BlockNode | undefined {
    return writeBlocker<BlockNode>(this);
  }

  /** Bytes the node's storage takes on disk, or undefined where the driver cannot tell (QEMU bdrv_get_allocated_file_size). */
  allocatedSize(): Promise<number | undefined> {
    return this.instance.allocatedSize?.() ?? Promise.resolve(undefined);
  }

  /** References held (by parents, drives, the layer, jobs); the node closes when it drops to 0. */
  get refCount(): number {
    return this.closed ? 0 : this.refs;
  }

  /** True once the last reference was released. */
  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Sets the hook every write, write-zeroes, compressed write and discard awaits before it
   * reaches the driver (QEMU's copy-before-write filter: a backup job copies the old data out
   * first). One hook per node; null removes it. EBUSY if another is set.
   */
  setBeforeWrite(hook: BeforeWriteHook | null): void {
    if (hook !== null && this.beforeWrite !== null) throw new BlockError('EBUSY', `node ${this.name} already has a copy-before-write user`, { node: this.name });
    this.beforeWrite = hook;
  }

  /** The driver's internal snapshots (qcow2), if its format keeps them. */
  get snapshots(): InternalSnapshots | undefined {
    return this.instance.snapshots;
  }

  /** Whether the driver can write compressed clusters ({@link writeCompressed}; QEMU bdrv_supports_compressed_writes). */
  get canWriteCompressed(): boolean {
    return this.instance.writeCompressed !== undefined;
  }

  /** Takes another reference; the node closes when the last one is released. */
  ref(): this {
    this.assertOpen();
    this.refs++;
    return this;
  }

  /** Releases a reference; the last one closes the driver, then the children. */
  async unref(): Promise<void> {
    if (this.closed) return;
    if (--this.refs > 0) return;
    this.closed = true;
    this.onClosed?.();
    // Bitmaps, image, then every child, each even if one before failed: the first error is reported after.
    let failed: unknown = null;
    const note = (e: unknown) => {
      failed ??= e;
    };
    if (!this.readOnly) await this.bitmaps.store().catch(note);
    await this.instance.close().catch(note);
    for (const child of this.children.values()) await child.unref().catch(note);
    if (failed !== null) throw this.driverError(failed, 'close');
  }

  /** What the driver's close, flush, reopen, resize threw (an errno error, anything) as a BlockError naming this node. */
  private driverError(e: unknown, op: string): BlockError {
    return fromErrno(e, `${op}: node ${this.name}`, { node: this.name });
  }

  /**
   * Makes the node read-write or read-only (QEMU bdrv_reopen_set_read_only) with the children
   * that inherit its mode: those opened with it, but `backing` (QEMU's backing options force
   * read-only); a child given as an open node keeps its own, and a read-only one refuses a
   * read-write parent (EROFS, QEMU's "Block node is read-only"). The caller drains first. Going read-only stores the persistent bitmaps and
   * flushes first. EROFS for a read-only driver, ENOTSUP for a driver that cannot reopen; on a
   * failure the nodes already switched are switched back.
   */
  reopen(readOnly: boolean): Promise<void> {
    return this.reopenNode(readOnly).catch((e: unknown) => Promise.reject(this.driverError(e, 'reopen')));
  }

  private async reopenNode(readOnly: boolean): Promise<void> {
    this.assertOpen();
    if (readOnly === this.ro) return;
    if (!readOnly && this.driver.capabilities.readOnly) throw new BlockError('EROFS', `Node '${this.name}' is read-only`, { node: this.name, field: 'read-only' });
    if (!this.instance.reopen) {
      throw new BlockError('ENOTSUP', `Block format '${this.driver.name}' used by node '${this.name}' does not support reopening files`, { node: this.name, field: 'read-only' });
    }
    // A child given as an open node (QEMU: by reference) keeps its own mode, as the backing child does.
    const own = [...this.children].filter(([role]) => role !== 'backing' && !(this.options[role] instanceof BlockNode)).map(([, c]) => c);
    const shared = [...this.children].find(([role, c]) => role !== 'backing' && !own.includes(c) && c.readOnly);
    if (!readOnly && shared) throw new BlockError('EROFS', 'Block node is read-only', { node: shared[1].name, field: 'read-only' });
    const inheriting = own.filter((c) => c.readOnly !== readOnly);
    const switched: BlockNode[] = [];
    const undo = async () => {
      for (const c of switched.reverse()) await c.reopen(!readOnly).catch(() => undefined);
    };
    if (readOnly) {
      await this.bitmaps.store();
      await this.instance.flush();
      await this.switchInstance(true);
    }
    try {
      for (const c of inheriting) {
        await c.reopen(readOnly);
        switched.push(c);
      }
      if (!readOnly) {
        // A format that writes metadata into its file needs writes to reach it all the way down, as at open (open.ts).
        const blocker = this.driver.capabilities.keepsMetadata === true ? this.children.get('file')?.writeBlocker() : undefined;
        if (blocker !== undefined) throw new BlockError('EROFS', 'Block node is read-only', { node: blocker.name, field: 'read-only' });
        await this.switchInstance(false);
      }
    } catch (e) {
      await undo();
      if (readOnly) await this.switchInstance(false).catch(() => undefined);
      throw e;
    }
  }

  private async switchInstance(readOnly: boolean): Promise<void> {
    const next = (await this.instance.reopen!(readOnly)) ?? this.instance;
    this.instance = next;
    this.ro = readOnly;
    // A format that read its backing at open reads from the node's backing child as it is now.
    next.replaceBacking?.(this.children.get('backing') ?? null);
    await this.bitmaps.reopened(next, readOnly);
  }

  /** Lets requests held back in this node and below go now (QEMU drained section). */
  drain(): void {
    if (this.closed) return;
    this.instance.drain?.();
    for (const child of this.children.values()) child.drain();
  }

  /**
   * Begins a drained section of this node and below (QEMU bdrv_drained_begin): held requests go
   * now, and requests that reach a throttle filter meanwhile (released from above) go at once,
   * until the returned function is called (drained_end; once).
   */
  drainBegin(): () => void {
    if (this.closed) return () => {};
    const ends: (() => void)[] = [];
    try {
      if (this.instance.drainBegin) ends.push(this.instance.drainBegin());
      else this.instance.drain?.();
      for (const child of this.children.values()) ends.push(child.drainBegin());
    } catch (e) {
      for (const end of ends) end();
      throw e;
    }
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      for (const end of ends) end();
    };
  }

  /** Fills `buffer` from `offset`. */
  read(offset: number, buffer: Uint8Array): Promise<void> {
    if (!(buffer instanceof Uint8Array)) return Promise.reject(new BlockError('EINVAL', `read: buffer must be a Uint8Array`, { node: this.name, offset }));
    const length = buffer.length;
    // The common case (open, in range, aligned, one piece) straight to the driver; anything else takes the general path.
    if (this.fits(offset, length) && this.alignMask === 0 && (this.maxTransfer === 0 || length <= this.maxTransfer)) {
      return length === 0 ? Promise.resolve() : this.instance.read(offset, buffer);
    }
    const refused = this.refused('read', offset, length, false);
    if (refused) return refused;
    if (length === 0) return Promise.resolve();
    if (this.isAligned(offset, length)) return this.readAligned(offset, buffer);
    return this.readUnaligned(offset, buffer);
  }

  /**
   * Writes `data` at `offset`. With `grow` (for format drivers that allocate at the end of their
   * file, as qcow2 does) a write past the end of a growable node extends it instead of failing.
   */
  write(offset: number, data: Uint8Array, grow = false): Promise<void> {
    return this.writeRecording(offset, data, grow, true);
  }

  /**
   * {@link write} for a caller that records the write itself with {@link recordWrite} once it
   * settles, from a continuation it makes anyway (a Drive request's completion): recording then
   * costs no promise of its own. @internal
   */
  writeUnrecorded(offset: number, data: Uint8Array): Promise<void> {
    return this.writeRecording(offset, data, false, false);
  }

  /**
   * Marks a settled write (failed ones too: they may have written part) in the node's recording
   * bitmaps (QEMU bdrv_co_write_req_finish). Marking after the write settles, not before, is what
   * keeps a clear that races an in-flight write from losing it.
   */
  recordWrite(offset: number, length: number): void {
    if (this.bitmaps.active) this.bitmaps.record(offset, length);
  }

  private writeRecording(offset: number, data: Uint8Array, grow: boolean, record: boolean): Promise<void> {
    if (!(data instanceof Uint8Array)) return Promise.reject(new BlockError('EINVAL', `write: data must be a Uint8Array`, { node: this.name, offset }));
    const length = data.length;
    if (this.tracked === null && this.beforeWrite === null && !this.readOnly && this.fits(offset, length) && (this.maxTransfer === 0 || length <= this.maxTransfer)) {
      if (length === 0) return Promise.resolve();
      const done = this.instance.write(offset, data);
      if (record && this.bitmaps.active) this.bitmaps.recordWhenSettled(done, offset, length);
      return done;
    }
    const refused = this.refused('write', offset, length, true, grow);
    if (refused) return refused;
    if (length === 0) return Promise.resolve();
    const run = () =>
      this.tracked === null
        ? this.writeAligned(offset, data)
        : this.serialised(offset, length, () => (this.isAligned(offset, length) ? this.writeAligned(offset, data) : this.writeUnaligned(offset, data)));
    const done = this.afterHook(offset, length, run);
    if (record && this.bitmaps.active) this.bitmaps.recordWhenSettled(done, offset, length);
    return done;
  }

  /**
   * Writes `data` compressed: one whole cluster at a cluster-aligned `offset` (the last cluster
   * of the disk may be shorter) that holds no data yet (qcow2; QEMU bdrv_pwrite_compressed).
   */
  writeCompressed(offset: number, data: Uint8Array): Promise<void> {
    if (!(data instanceof Uint8Array)) return Promise.reject(new BlockError('EINVAL', `write-compressed: data must be a Uint8Array`, { node: this.name, offset }));
    const refused = this.refused('write-compressed', offset, data.length, true);
    if (refused) return refused;
    if (!this.instance.writeCompressed) {
      return Promise.reject(new BlockError('ENOTSUP', `write-compressed: the ${this.driver.name} driver cannot write compressed data`, { node: this.name, offset }));
    }
    const instance = this.instance as Required<Pick<DriverInstance, 'writeCompressed'>>;
    const done = this.afterHook(offset, data.length, () => instance.writeCompressed(offset, data));
    if (this.bitmaps.active) this.bitmaps.recordWhenSettled(done, offset, data.length);
    return done;
  }

  /** Makes a range read as zeros. */
  writeZeroes(offset: number, length: number): Promise<void> {
    const refused = this.refused('write-zeroes', offset, length, true);
    if (refused) return refused;
    if (length === 0) return Promise.resolve();
    const done = this.afterHook(offset, length, () => (this.tracked === null ? this.zeroAligned(offset, length) : this.zeroSerialised(offset, length)));
    if (this.bitmaps.active) this.bitmaps.recordWhenSettled(done, offset, length);
    return done;
  }

  private zeroSerialised(offset: number, length: number): Promise<void> {
    return this.serialised(offset, length, async () => {
      const { start, end } = this.split(offset, length);
      if (end <= start) return this.writeUnaligned(offset, zeroes(length));
      if (start > offset) await this.writeUnaligned(offset, zeroes(start - offset));
      await this.zeroAligned(start, end - start);
      if (offset + length > end) await this.writeUnaligned(end, zeroes(offset + length - end));
    });
  }

  /** Drops a range (only its aligned part, as QEMU does). */
  discard(offset: number, length: number): Promise<void> {
    const refused = this.refused('discard', offset, length, true);
    if (refused) return refused;
    const hook = this.beforeWrite;
    return hook === null ? this.discardNow(offset, length) : hook(offset, length).then(() => this.discardNow(offset, length));
  }

  private discardNow(offset: number, length: number): Promise<void> {
    const { start, end } = this.split(offset, length);
    // QEMU marks the range the caller discarded, even the unaligned edges it did not pass on.
    if (end <= start) {
      if (this.bitmaps.active) this.bitmaps.record(offset, length);
      return Promise.resolve();
    }
    const done = this.instance.discard(start, end - start);
    if (this.bitmaps.active) this.bitmaps.recordWhenSettled(done, offset, length);
    return done;
  }

  /**
   * Resizes the node to `size` bytes (QEMU bdrv_co_truncate). The caller drains first (Drive.resize
   * does). Shrinking needs `shrink: true`; preallocation only applies to growing.
   */
  async truncate(size: number, options: TruncateOptions = { shrink: false }): Promise<void> {
    this.assertOpen();
    const ctx = { node: this.name, field: 'size' };
    if (!Number.isSafeInteger(size) || size < 0) throw new BlockError('EINVAL', `resize: size ${valueText(size)} must be a non-negative safe integer`, ctx);
    if (this.readOnly) throw new BlockError('EROFS', `resize: node ${this.name} is read-only`, { node: this.name });
    if (!this.instance.truncate) {
      // A filter (throttle) resizes what it filters, as QEMU's bdrv_co_truncate does.
      const filtered = this.driver.capabilities.kind === 'filter' ? this.children.get('file') : undefined;
      if (filtered) return filtered.truncate(size, options);
      throw new BlockError('ENOTSUP', `Image format driver does not support resize (${this.driver.name})`, { node: this.name });
    }
    const old = this.instance.length();
    if (size < old && !options.shrink) throw new BlockError('EINVAL', `resize: shrinking ${this.name} from ${old} to ${size} bytes needs the shrink option`, ctx);
    if (size < old && (options.prealloc ?? 'off') !== 'off') throw new BlockError('EINVAL', 'Preallocation can only be used for growing images', { node: this.name, field: 'prealloc' });
    await this.instance.truncate(size, options).catch((e: unknown) => Promise.reject(this.driverError(e, 'resize')));
    // The bitmaps follow the node (QEMU bdrv_dirty_bitmap_truncate).
    if (this.bitmaps.active) this.bitmaps.resize(this.instance.length());
  }

  /** Makes completed writes durable. */
  flush(): Promise<void> {
    if (this.closed) return Promise.reject(this.closedError());
    if (this.readOnly) return Promise.resolve();
    return this.instance.flush().catch(this.flushFailed);
  }

  /**
   * Names `name` (null or '': none) as the backing file in the image's header, with `format` as
   * its backing format (QEMU bdrv_change_backing_file): ENOTSUP for a driver without such a
   * header field. The node keeps its backing child; data the new backing file relies on must be
   * durable before (the caller flushes it).
   */
  changeBackingFile(name: string | null, format?: string): Promise<void> {
    if (this.closed) return Promise.reject(this.closedError());
    if (this.readOnly) return Promise.reject(new BlockError('EROFS', `change-backing-file: node ${this.name} is read-only`, { node: this.name }));
    if (!this.instance.changeBackingFile) {
      return Promise.reject(new BlockError('ENOTSUP', `the ${this.driver.name} format does not support changing the backing file`, { node: this.name, field: 'backing_file' }));
    }
    return this.instance.changeBackingFile(name, format).catch((e: unknown) => Promise.reject(this.driverError(e, 'change-backing-file')));
  }

  /**
   * Makes `next` (null: none) the node's backing child at runtime (QEMU bdrv_set_backing_hd, as
   * a stream or commit job ends): reads that fall through go to it at once and `children`
   * follows. `next` gains a reference; the old backing child is returned with the reference the
   * node held, for the caller to release once reads already under way are done. The header is
   * untouched (see {@link changeBackingFile}). ENOTSUP for a driver without a backing child,
   * EINVAL when `next` is this node or has it below (a loop).
   */
  swapBacking(next: BlockNode | null): BlockNode | undefined {
    this.assertOpen();
    if (!this.instance.replaceBacking) {
      throw new BlockError('ENOTSUP', `the ${this.driver.name} driver cannot change its backing node at runtime`, { node: this.name, field: 'backing' });
    }
    for (let n: BlockNode | undefined = next ?? undefined; n !== undefined; n = n.child('backing') ?? n.child('file')) {
      if (n === this) throw new BlockError('EINVAL', `node '${next!.name}' cannot become the backing node of '${this.name}': it is above it`, { node: this.name, field: 'backing' });
    }
    const children = this.children as Map<string, BlockNode>;
    const old = children.get('backing');
    if (next === old) return undefined;
    next?.ref();
    this.instance.replaceBacking(next);
    if (next === null) children.delete('backing');
    else children.set('backing', next);
    return old;
  }

  /** Status of the extent that starts at `offset` (never longer than `length`, never empty). */
  async blockStatus(offset: number, length: number): Promise<BlockStatus> {
    this.checkRange('block-status', offset, length);
    if (length === 0) throw new BlockError('EINVAL', `block-status: length must be > 0 at offset ${offset}`, { node: this.name, offset });
    const s = await this.instance.blockStatus(offset, length);
    if (!(s.length > 0) || s.offset !== offset) {
      throw new BlockError('EIO', `driver ${this.driver.name} returned an invalid block status at offset ${offset}`, { node: this.name, offset });
    }
    if (s.length > length) s.length = length;
    s.node ??= this.name;
    return s;
  }

  /** Every extent of a range, merged where neighbours have the same status. */
  async blockStatusMap(offset = 0, length = this.length - offset): Promise<BlockStatus[]> {
    this.checkRange('block-status', offset, length);
    const out: BlockStatus[] = [];
    for await (const s of mergedExtents(this, offset, length, undefined, this.name)) out.push(s);
    return out;
  }

  /** `run` now, or after the copy-before-write hook has dealt with the range. */
  private afterHook(offset: number, length: number, run: () => Promise<void>): Promise<void> {
    const hook = this.beforeWrite;
    return hook === null ? run() : hook(offset, length).then(run);
  }

  // Offsets exceed 2^31, so no bitwise arithmetic on them.
  private isAligned(offset: number, length: number): boolean {
    return this.alignMask === 0 || (offset % this.alignment === 0 && length % this.alignment === 0);
  }

  /** True if the node is open and [offset, offset+length) is a valid range inside it (no growing): checkRange would pass. */
  private fits(offset: number, length: number): boolean {
    return !this.closed && Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length >= 0 && offset + length <= this.instance.length();
  }

  private assertOpen(): void {
    if (this.closed) throw this.closedError();
  }

  private checkRange(op: string, offset: number, length: number, grow = false): void {
    this.assertOpen();
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new BlockError('EINVAL', `${op}: offset ${valueText(offset)} and length ${valueText(length)} must be non-negative safe integers`, {
        node: this.name,
        offset,
        length,
      });
    }
    const size = this.instance.length();
    // A growable node (a file under qcow2) takes writes past its end and grows.
    if (offset + length > size && !(grow && this.instance.growable)) {
      throw new BlockError('EINVAL', `${op}: range ${offset}+${length} is beyond the end of ${this.name} (${size} bytes)`, {
        node: this.name,
        offset,
        length,
      });
    }
  }

  /** The rejected promise for a request that is out of range or writes a read-only node, else null: nodes never throw synchronously. */
  private refused(op: string, offset: number, length: number, writes: boolean, grow = false): Promise<never> | null {
    try {
      this.checkRange(op, offset, length, grow);
      if (writes) this.checkWritable(op, offset);
      return null;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private closedError(): BlockError {
    return new BlockError('ECLOSED', `node ${this.name} is closed`, { node: this.name });
  }

  private checkWritable(op: string, offset: number): void {
    if (this.readOnly) throw new BlockError('EROFS', `${op}: node ${this.name} is read-only`, { node: this.name, offset });
  }

  /** The aligned part [start, end) inside a range; empty (end <= start) if there is none. */
  private split(offset: number, length: number) {
    const start = Math.ceil(offset / this.alignment) * this.alignment;
    const end = Math.floor((offset + length) / this.alignment) * this.alignment;
    return { start, end };
  }

  private readAligned(offset: number, buffer: Uint8Array): Promise<void> {
    const max = this.maxTransfer;
    if (max === 0 || buffer.length <= max) return this.instance.read(offset, buffer);
    return runPieces(Math.ceil(buffer.length / max), (i) =>
      this.instance.read(offset + i * max, buffer.subarray(i * max, Math.min(buffer.length, (i + 1) * max))),
    );
  }

  private writeAligned(offset: number, data: Uint8Array): Promise<void> {
    const max = this.maxTransfer;
    if (max === 0 || data.length <= max) return this.instance.write(offset, data);
    return runPieces(Math.ceil(data.length / max), (i) =>
      this.instance.write(offset + i * max, data.subarray(i * max, Math.min(data.length, (i + 1) * max))),
    );
  }

  private async zeroAligned(offset: number, length: number): Promise<void> {
    if (this.instance.writeZeroes) {
      const max = this.maxTransfer || length;
      for (let pos = 0; pos < length; pos += max) await this.instance.writeZeroes(offset + pos, Math.min(max, length - pos));
      return;
    }
    for (let pos = 0; pos < length; pos += ZERO_CHUNK) {
      await this.writeAligned(offset + pos, zeroes(Math.min(ZERO_CHUNK, length - pos)));
    }
  }

  /** The aligned window around a range, clamped to the end of the node (its size may be unaligned). */
  private window(offset: number, length: number): [number, number] {
    const align = this.alignment;
    const start = offset - (offset % align);
    const end = Math.min(this.instance.length(), Math.ceil((offset + length) / align) * align);
    return [start, end];
  }

  private async readUnaligned(offset: number, buffer: Uint8Array): Promise<void> {
    const [start, end] = this.window(offset, buffer.length);
    const bounce = new Uint8Array(end - start);
    await this.readAligned(start, bounce);
    buffer.set(bounce.subarray(offset - start, offset - start + buffer.length));
  }

  private async writeUnaligned(offset: number, data: Uint8Array): Promise<void> {
    const [start, end] = this.window(offset, data.length);
    const bounce = new Uint8Array(end - start);
    // Only the partial first and last blocks need their old contents.
    const align = this.alignment;
    await this.readAligned(start, bounce.subarray(0, Math.min(align, bounce.length)));
    const lastStart = Math.max(0, bounce.length - align);
    if (lastStart > 0) await this.readAligned(start + lastStart, bounce.subarray(lastStart));
    bounce.set(data, offset - start);
    await this.writeAligned(start, bounce);
  }

  /** Runs `op` after the overlapping writes that came earlier (see OverlapQueue). */
  private serialised(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    const [start, end] = this.window(offset, length);
    return this.tracked!.run(start, end, op);
  }
}
