// The driver contract's types, written over the node type they hand to drivers (`Node`), so that
// this module needs nothing of node.ts: node.ts and driver.ts both build on it, neither on the other in a circle.
import type { z } from 'zod';
import type { Clock } from '../clock.js';
import type { CheckOptions, CheckResult } from './check-result.js';
import type { GranuleSet } from './granule-set.js';

/** What kind of node a driver makes (QEMU: protocol, format or filter driver). */
export type DriverKind = 'protocol' | 'format' | 'filter';

/** Static facts about a driver, known before any node is opened. */
export interface DriverCapabilities {
  /** protocol (talks to storage), format (interprets a child), filter (passes through to one child). */
  readonly kind: DriverKind;
  /** Nodes of this driver can never be written (a read-only protocol such as http). */
  readonly readOnly?: boolean;
  /** The driver may have a `backing` child. */
  readonly supportsBacking?: boolean;
  /**
   * The driver keeps metadata of its own in its children and grows them (qcow2; not raw): a
   * read-write child takes QEMU's resize permission too, and shares writing with nobody.
   */
  readonly keepsMetadata?: boolean;
}

/** The node a child is opened for, and in which role. */
export interface ParentLink {
  /** The parent's driver capabilities. */
  readonly capabilities: DriverCapabilities;
  /** The child's role under the parent (`file`, `backing`, …). */
  readonly role: string;
}

/** One contiguous range with the same allocation status (what `qemu-img map` prints). */
export interface BlockStatus {
  /** Guest offset where this extent starts. */
  offset: number;
  /** Extent length in bytes (> 0). */
  length: number;
  /** The range holds data in some node of the chain (false: reads come from nowhere, i.e. zeros). */
  data: boolean;
  /** The range reads as zeros. */
  zero: boolean;
  /** The range is allocated in the node that reports it (false: it falls through to a backing node or is unallocated). */
  allocated: boolean;
  /** Depth in the backing chain of the node that holds it (0 = this node). */
  depth: number;
  /** Name of the node holding the range, if known. */
  node?: string;
  /** Offset in the host file/protocol node that holds the data, when it maps 1:1. */
  hostOffset?: number;
  /** Name of the file/protocol node that `hostOffset` refers to. */
  hostNode?: string;
}

/**
 * A persistent dirty bitmap as a format stores it (qcow2's bitmaps extension). `granules`
 * holds bit i for guest bytes [i × granularity, (i+1) × granularity); it is absent for an
 * inconsistent bitmap, whose bits QEMU does not load.
 */
export interface StoredBitmap {
  readonly name: string;
  /** Bytes one bit covers (a power of two). */
  readonly granularity: number;
  /** Recording writes (qcow2's `auto` flag). */
  readonly recording: boolean;
  /** Found marked in use (qcow2's `in_use` flag at open: the image was not closed cleanly). */
  readonly inconsistent: boolean;
  /** The dirty granules (see above). */
  readonly granules?: GranuleSet;
}

/** What a format reads of its backing node (a BlockNode is one). */
export interface BackingSource {
  readonly name: string;
  readonly length: number;
  read(offset: number, buffer: Uint8Array): Promise<void>;
  blockStatus(offset: number, length: number): Promise<BlockStatus>;
}

/**
 * An open node's operations (QEMU: the BlockDriver function table bound to one BlockDriverState).
 * The generic layer guarantees every call is in bounds, aligned to `alignment`, at most
 * `maxTransfer` bytes, and that no write reaches a read-only node.
 */
export interface DriverInstance {
  /** Request alignment in bytes (power of two); unaligned requests are read-modify-written by the generic layer. */
  readonly alignment: number;
  /** Largest request the driver accepts in one call (bytes); larger ones are split. 0 or undefined: no limit. */
  readonly maxTransfer?: number;
  /** Writes past the end extend the node (a file under a format driver that allocates at its end, as QEMU's file-posix). */
  readonly growable?: boolean;
  /** Virtual size in bytes. */
  length(): number;
  /** Fills `buffer` with `buffer.length` bytes from `offset`. */
  read(offset: number, buffer: Uint8Array): Promise<void>;
  /** Writes `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes completed writes durable. */
  flush(): Promise<void>;
  /** Hints that a range is no longer needed (may do nothing). */
  discard(offset: number, length: number): Promise<void>;
  /** Makes a range read as zeros. If absent, the generic layer writes zero buffers. */
  writeZeroes?(offset: number, length: number): Promise<void>;
  /** Writes one whole cluster compressed (qcow2; QEMU bdrv_pwrite_compressed): `offset` cluster-aligned, into an unallocated cluster. */
  writeCompressed?(offset: number, data: Uint8Array): Promise<void>;
  /** Status of the extent starting at `offset` (may cover less than `length`, never 0 bytes). */
  blockStatus(offset: number, length: number): Promise<BlockStatus>;
  /** Lets requests held back by this node (a throttle filter) go now. Children are drained by the generic layer. */
  drain?(): void;
  /**
   * Begins a drained section (QEMU bdrv_drained_begin): like {@link drain}, and requests that
   * arrive go at once too, until the returned function is called (drained_end). Without it,
   * the generic layer calls {@link drain} once.
   */
  drainBegin?(): () => void;
  /**
   * Loads the persistent dirty bitmaps of the image (once, right after open). On a read-write
   * node the driver marks them in use in the image before it returns (QEMU), so that a crash
   * leaves them inconsistent.
   */
  loadBitmaps?(): Promise<StoredBitmap[]>;
  /** Why a new persistent bitmap `name` of `granularity` could not be stored, or undefined if it can (QEMU bdrv_can_store_new_dirty_bitmap). */
  canStoreBitmap?(name: string, granularity: number): string | undefined;
  /**
   * Stores the node's persistent bitmaps (called before {@link close} on a read-write node, with
   * every persistent bitmap, inconsistent ones included, which stay as they are in the image) and
   * clears their in-use flag. The image keeps exactly these bitmaps.
   */
  storeBitmaps?(bitmaps: readonly StoredBitmap[]): Promise<void>;
  /** Removes the stored bitmap `name` from the image now (QEMU removes a persistent bitmap at once). */
  removeStoredBitmap?(name: string): Promise<void>;
  /**
   * Changes the virtual size to `size` (QEMU bdrv_co_truncate), called with no request in flight
   * (the caller drains); `length()` returns `size` afterwards. Absent: the node cannot be resized.
   */
  truncate?(size: number, options: TruncateOptions): Promise<void>;
  /**
   * Names `name` (null: none) as the backing file in the image's header, with `format` as its
   * backing format, on the open node (QEMU bdrv_change_backing_file); the backing child stays as it is.
   */
  changeBackingFile?(name: string | null, format?: string): Promise<void>;
  /**
   * Reads that fall through this node go to `backing` (null: none) from now on: a stream or a
   * commit job dropped the nodes in between (QEMU bdrv_set_backing_hd). The generic layer keeps
   * the children and their references; the header is {@link changeBackingFile}'s business.
   */
  replaceBacking?(backing: BackingSource | null): void;
  /**
   * Switches the node between read-only and read-write (QEMU bdrv_reopen, read-only option),
   * called drained, with the children that inherit the mode (all but `backing`) already
   * read-write when going read-write, still read-write when going read-only. Resolves to the
   * instance that serves the node from now on (this one, when undefined); the old one is then
   * finished with (its descriptors moved or closed), not closed again. Absent: cannot reopen.
   */
  reopen?(readOnly: boolean): Promise<DriverInstance | undefined>;
  /** Releases resources; children are closed by the generic layer afterwards. */
  close(): Promise<void>;
  /** Extra facts for `info` (format specific: cluster size, snapshots, …). */
  info?(): Record<string, unknown>;
  /** Bytes the node's storage takes on disk (QEMU bdrv_get_allocated_file_size: st_blocks × 512 for a file); absent where unknown. */
  allocatedSize?(): Promise<number>;
  /** Internal snapshots (qcow2), for formats that keep them in the image. */
  snapshots?: InternalSnapshots;
}

/** One internal snapshot as QEMU's QEMUSnapshotInfo has it. */
export interface InternalSnapshotInfo {
  id: string;
  name: string;
  /** Guest disk size when it was taken. */
  size: number;
  date: { sec: number; nsec: number };
  vmClockNs: number;
  vmStateSize: number;
  /** -1: not recorded. */
  icount: number;
}

/** What a new internal snapshot records besides its name (QEMU's defaults: now, clock 0, icount 0). */
export interface NewSnapshot {
  name: string;
  /** QEMU picks the next free number when absent. */
  id?: string;
  date?: { sec: number; nsec: number };
  vmClockNs?: number;
  icount?: number;
}

/** A format's internal snapshots (QEMU bdrv_snapshot_*): changes need a read-write node. */
export interface InternalSnapshots {
  list(): InternalSnapshotInfo[];
  /** Takes a snapshot of the current state; rejects EEXIST on a duplicate id. */
  create(snapshot: NewSnapshot): Promise<InternalSnapshotInfo>;
  /** Deletes the snapshot with this id and/or name (both must match when both are given); ENOENT if none. */
  delete(id: string | undefined, name: string | undefined): Promise<InternalSnapshotInfo>;
  /** Makes the snapshot (an id, else a name) the current state again (qemu-img snapshot -a). */
  apply(idOrName: string): Promise<void>;
}

/** Options of one node in the style of QEMU's blockdev-add; children are nested objects. */
export interface NodeOptions {
  /** Name of the driver that opens the node (`file`, `qcow2`, …). */
  driver: string;
  /** Name of the node (QEMU node-name); generated if absent. */
  nodeName?: string;
  /** Open read-only. Defaults to the parent's mode (or read-write at the top, read-only for read-only drivers). */
  readOnly?: boolean;
  [key: string]: unknown;
}

/** What a driver gets to open one node. */
export interface GenericOpenContext<Node, O> {
  /** Options of this node, validated by the driver's schema (children already removed). */
  readonly options: O;
  /** Children opened by the generic layer, by role (`file`, `backing`, `data-file`, …). */
  readonly children: ReadonlyMap<string, Node>;
  /** The node must not be written. */
  readonly readOnly: boolean;
  /** Name of the node being opened (for error context). */
  readonly nodeName: string;
  /** Child roles the user set to null (QEMU `backing: null`): the driver must not open them itself. */
  readonly disabledChildren: ReadonlySet<string>;
  /** The clock of the owning layer (for latency emulation, timers). */
  readonly clock: Clock;
  /** The parent this node is opened as a child of; undefined at the top of a tree. */
  readonly parent?: ParentLink;
  /**
   * Opens another node (e.g. a backing file named in an image header) as a child in `role`.
   * Options may be the same shape a user passes; `readOnly` defaults to this node's.
   */
  openChild(role: string, options: NodeOptions): Promise<Node>;
}

/** A backing file named in a new image (its name as stored, its format and size). */
export interface CreateBacking {
  /** The name stored in the image (as given: relative names resolve against the image's directory). */
  readonly name: string;
  /** The backing image's format (`qcow2`, `raw`, `vpc`, …). */
  readonly format: string;
  /** The backing image's virtual size in bytes. */
  readonly size: number;
  /** Where the backing image is (`name` resolved against the new image's final directory), when the caller resolved it. */
  readonly path?: string;
}

/**
 * How a format driver lays out a new image (QEMU bdrv_co_create): `create -f FORMAT -o …` and
 * `convert -O FORMAT` go through it for every format but qcow2 and raw (which have their own).
 */
export interface FormatCreator<Node> {
  /** Schema of the format's creation options, with qemu-img's `-o` names (`subformat`, `block_size`, …); size and backing are separate. */
  readonly schema: z.ZodType<Record<string, unknown>>;
  /**
   * Writes a new, empty image of `size` bytes onto `file` (an empty, writable, growable protocol
   * node) with options validated by {@link schema}; returns the virtual size the image really
   * got (formats round it, e.g. vpc's geometry).
   */
  create(file: Node, size: number, options: Record<string, unknown>, backing?: CreateBacking, siblings?: CreateSiblings<Node>): Promise<number>;
}

/**
 * Files a creator makes beside its new image (vmdk's extent files), given by `createImage` and
 * `convertImage`: they appear with the image when it is complete and are removed if it is not.
 * Without it, a creator that needs them refuses with ENOTSUP.
 */
export interface CreateSiblings<Node> {
  /**
   * Makes the empty file `name` (a base name) beside the new image and opens it as a writable,
   * growable protocol node, which the creator unrefs. Until the rename, these and the image's own
   * file share a directory under their final base names, so names relative to the image resolve.
   */
  create(name: string): Promise<Node>;
}

/** A driver: a name, its capabilities, its options schema, the roles of its children and `open`. */
export interface GenericBlockDriver<Node, S extends z.ZodType = z.ZodType> {
  /** Name used as `driver` in options (`file`, `raw`, `qcow2`, …). */
  readonly name: string;
  /** Static facts about the driver: its kind, read-only, backing support. */
  readonly capabilities: DriverCapabilities;
  /** Schema of this driver's own options (without `driver`, `nodeName`, `readOnly` and child roles). */
  readonly schema: S;
  /**
   * Children the generic layer opens before `open`: role → required? A driver may open
   * further children itself (see {@link GenericOpenContext.openChild}).
   */
  readonly children?: Readonly<Record<string, 'required' | 'optional'>>;
  /**
   * How much a format driver recognizes `head` (the first bytes of a protocol node, `filename` its name if it has one) as
   * its own: 0 not at all, 1 a fallback (raw), 100 a sure magic (QEMU bdrv_probe); the highest score wins.
   */
  probe?(head: Uint8Array, filename?: string): number;
  /** Opens one node with validated options and opened children (QEMU bdrv_open). */
  open(ctx: GenericOpenContext<Node, z.output<S>>): Promise<DriverInstance>;
  /** Creates new images of this format (format drivers that can). */
  readonly create?: FormatCreator<Node>;
  /** Checks (and with `repair`, fixes) the metadata of an image in `file`, its protocol node, as qemu-img check (formats that have checks). */
  check?(file: Node, options: CheckOptions<Node>): Promise<CheckResult>;
}

/** How the new part of a grown node is allocated (QEMU PreallocMode). */
export type PreallocMode = 'off' | 'metadata' | 'falloc' | 'full';

/** Options of a resize ({@link DriverInstance.truncate}). */
export interface TruncateOptions {
  /** Shrinking is allowed (data beyond the new end is lost). */
  readonly shrink: boolean;
  /** Allocation of the grown part; default `off`. */
  readonly prealloc?: PreallocMode;
}
