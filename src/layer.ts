import * as z from 'zod';
import { type Clock, RealClock } from './clock.js';
import { Drive, type DriveHost } from './drive.js';
import { builtinDrivers } from './drivers/builtin.js';
import { BlockError } from './errors.js';
import type { BuiltinNodeOptions, KeyCheckedOptions } from './drivers/options.js';
import type { BlockDriver, NodeOptions } from './node/driver.js';
import type { BlockNode } from './node/node.js';
import { openNode } from './node/open.js';
import { PROBE_DRIVER } from './node/probe.js';
import { DriverRegistry } from './node/registry.js';
import { imageOptions, probeImageFormat } from './image-options.js';
import { parseDriveErrorAction } from './options/error-policy.js';
import { parseOptions } from './options/zod-error.js';
import { openWithTemporaryOverlay } from './overlay.js';
import { type ThrottleGroup, ThrottleGroupRegistry } from './throttle/group.js';
import { type ThrottleLimits, throttleOptionsSchema, validateLimits } from './throttle/limits.js';
import { throttleFilterDriver } from './drivers/throttle.js';
import type { BuiltinDriveOptions, DriveOptions, DriveOwnOptions } from './options/drive-options.js';
import { ID_PATTERN, ID_RULE } from './ids.js';
import { JobRegistry } from './jobs/registry.js';
import { isRootNode } from './jobs/root-node.js';
import type { Job } from './jobs/job.js';
import { type JobSpec, startJob } from './jobs/start.js';

export type { BuiltinDriveOptions, DriveOptions, DriveOwnOptions } from './options/drive-options.js';

/** Options of a BlockLayer. */
export interface BlockLayerOptions {
  /** Time source for throttling, stats and latency emulation (default: the real clock). */
  clock?: Clock;
  /** Extra drivers to register besides the built-in ones. */
  drivers?: BlockDriver[];
}

const driveIdSchema = z.string().regex(ID_PATTERN, ID_RULE);

/**
 * A context that owns drivers, drives (by id) and, later, named throttle groups. Several
 * independent layers can live in one process (e.g. one per test).
 */
export class BlockLayer {
  /** Time source of throttling, stats and latency emulation. */
  readonly clock: Clock;
  /** The drivers nodes of this layer can be opened with. */
  readonly drivers = new DriverRegistry();
  /** Named throttle groups of this layer. */
  readonly groups: ThrottleGroupRegistry;
  /** Block jobs (QEMU's job list): stream, commit, mirror, backup. */
  readonly jobs: JobRegistry;
  private readonly drives = new Map<string, Drive>();
  /** What every drive of the layer is given (one object for all: a drive costs no host of its own). */
  private readonly driveHost: DriveHost;
  /** Drives made for a node's users that are not drives of their own (an export's BlockBackend): not listed, closed with the layer. */
  private readonly internalDrives = new Set<Drive>();
  /** Nodes added with {@link addNode} (QEMU: owned by the monitor), by name. */
  private readonly ownedNodes = new Map<string, BlockNode>();
  private readonly nodeNames = new Set<string>();
  private nextId = 0;
  private closed = false;
  /** Opens in progress: close() waits for them and closes what they made. */
  private readonly opening = new Set<Promise<unknown>>();
  private readonly openListeners = new Set<(drive: Drive) => void>();

  constructor(options: BlockLayerOptions = {}) {
    this.clock = options.clock ?? new RealClock();
    this.groups = new ThrottleGroupRegistry(this.clock);
    this.jobs = new JobRegistry(this.clock);
    this.driveHost = {
      clock: this.clock,
      groups: this.groups,
      forget: (d) => {
        if (this.drives.get(d.id) === d) this.drives.delete(d.id);
        this.internalDrives.delete(d);
      },
    };
    for (const d of builtinDrivers()) this.drivers.register(d);
    this.drivers.register(throttleFilterDriver(this.groups));
    for (const d of options.drivers ?? []) this.drivers.register(d);
  }

  /** Adds a driver under its name. */
  registerDriver(driver: BlockDriver): void {
    this.drivers.register(driver);
  }

  /** Opens a node graph without a drive on top (for tools and custom stacks); the caller owns it. */
  openNode(options: BuiltinNodeOptions): Promise<BlockNode>;
  /** Opens a node graph of a driver added with registerDriver, or of options typed loosely (see {@link KeyCheckedOptions}). */
  openNode<const O extends NodeOptions>(options: KeyCheckedOptions<O>): Promise<BlockNode>;
  openNode(options: NodeOptions | BuiltinNodeOptions): Promise<BlockNode> {
    return this.track(async () => {
      const node = await openNode({ registry: this.drivers, clock: this.clock, nodeNames: this.nodeNames }, options);
      if (this.closed) {
        await node.unref();
        throw this.closedError('openNode');
      }
      return node;
    });
  }

  /** Opens a node graph and puts a drive on top of it. */
  openDrive(options: BuiltinDriveOptions): Promise<Drive>;
  /** Opens a drive over a driver added with registerDriver, or with options typed loosely (see {@link KeyCheckedOptions}). */
  openDrive<const O extends DriveOptions>(options: KeyCheckedOptions<O, keyof DriveOwnOptions>): Promise<Drive>;
  openDrive(options: DriveOptions | BuiltinDriveOptions): Promise<Drive> {
    return this.track(() => this.openDriveNow(options as DriveOptions));
  }

  private async openDriveNow(options: DriveOptions): Promise<Drive> {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw new BlockError('EINVAL', 'options: must be an object with a \'driver\'', { field: 'options' });
    }
    const { id: askedId, throttle, rerror, werror, snapshot, ...nodeOptions } = options;
    if (typeof snapshot === 'string') (nodeOptions as NodeOptions).snapshot = snapshot;
    else if (snapshot !== undefined && typeof snapshot !== 'boolean') {
      throw new BlockError('EINVAL', 'snapshot: must be a boolean (a temporary overlay) or the name of an internal snapshot', { field: 'snapshot' });
    }
    const limits = throttle === undefined ? undefined : parseOptions(throttleOptionsSchema, throttle, 'throttle');
    // QEMU's rules checked here, before anything opens, so errors name `throttle.<field>` as written.
    if (limits !== undefined) {
      const { group: _, ...values } = limits;
      validateLimits(values, 'throttle.');
    }
    const policy = {
      rerror: rerror === undefined ? undefined : parseDriveErrorAction(rerror, 'read', 'rerror'),
      werror: werror === undefined ? undefined : parseDriveErrorAction(werror, 'write', 'werror'),
    };
    let id: string;
    if (askedId !== undefined) {
      const parsed = driveIdSchema.safeParse(askedId);
      if (!parsed.success) throw new BlockError('EINVAL', `id: ${parsed.error.issues[0].message}`, { field: 'id' });
      id = askedId;
    } else {
      do id = `drive${this.nextId++}`;
      while (this.drives.has(id));
    }
    if (this.drives.has(id)) throw new BlockError('EINVAL', `id: a drive named '${id}' already exists`, { field: 'id' });
    const env = { registry: this.drivers, clock: this.clock, nodeNames: this.nodeNames };
    const node =
      snapshot === true
        ? await openWithTemporaryOverlay((o) => openNode(env, o), nodeOptions as NodeOptions)
        : await openNode(env, nodeOptions as NodeOptions);
    if (this.closed || this.drives.has(id)) {
      await node.unref();
      if (this.closed) throw this.closedError('openDrive');
      throw new BlockError('EINVAL', `id: a drive named '${id}' already exists`, { field: 'id' });
    }
    const drive = this.makeDrive(id, node, policy, false);
    if (limits !== undefined) {
      try {
        drive.setLimits(limits);
      } catch (e) {
        await drive.close();
        throw e;
      }
    }
    for (const listener of this.openListeners) listener(drive);
    return drive;
  }

  private makeDrive(id: string, node: BlockNode, policy: ConstructorParameters<typeof Drive>[3], internal: boolean): Drive {
    const drive = new Drive(id, node, this.driveHost, policy);
    if (internal) this.internalDrives.add(drive);
    else this.drives.set(id, drive);
    return drive;
  }

  /**
   * Opens a node graph and keeps it in the layer under its node name (QEMU blockdev-add: a
   * node owned by the monitor), for exports, drives ({@link attachDrive}), jobs and snapshots
   * to use by name. `nodeName` is required. Removed with {@link deleteNode}.
   */
  async addNode(options: BuiltinNodeOptions | NodeOptions): Promise<BlockNode> {
    const name = (options as { nodeName?: unknown }).nodeName;
    if (typeof name !== 'string' || name === '') throw new BlockError('EINVAL', "nodeName: required for a node the layer keeps ('node-name' must be specified for the root node)", { field: 'nodeName' });
    const node = await this.openNode(options as NodeOptions);
    this.ownedNodes.set(node.name, node);
    return node;
  }

  /**
   * Removes a node added with {@link addNode} (QEMU blockdev-del): refused while anything else
   * uses it (a drive, an export, a parent node, a job).
   */
  async deleteNode(name: string): Promise<void> {
    const node = this.ownedNodes.get(name);
    if (node === undefined) {
      if (this.findNode(name) !== undefined) throw new BlockError('EINVAL', `Node ${name} is not owned by the monitor`, { field: 'node-name' });
      throw new BlockError('ENOENT', `Failed to find node with node-name='${name}'`, { field: 'node-name' });
    }
    if (node.refCount > 1) throw new BlockError('EBUSY', `Node ${name} is in use`, { field: 'node-name' });
    this.ownedNodes.delete(name);
    await node.unref();
  }

  /** Whether the layer holds `name` as a node added with {@link addNode}. */
  ownsNode(name: string): boolean {
    return this.ownedNodes.has(name);
  }

  /** Every open node the layer knows: added ones, and the graphs of its drives (internal ones included), each once, parents before children. */
  listNodes(): BlockNode[] {
    const out: BlockNode[] = [];
    const seen = new Set<BlockNode>();
    const walk = (n: BlockNode) => {
      if (seen.has(n) || n.isClosed) return;
      seen.add(n);
      out.push(n);
      for (const child of n.children.values()) walk(child);
    };
    for (const d of this.drives.values()) if (!d.closed) walk(d.node);
    for (const n of this.ownedNodes.values()) walk(n);
    for (const d of this.internalDrives) if (!d.closed) walk(d.node);
    return out;
  }

  /** The open node with that node name, anywhere in the layer's graphs. */
  findNode(name: string): BlockNode | undefined {
    return this.listNodes().find((n) => n.name === name);
  }

  /**
   * Puts a drive on an open node of the layer (a node name or the node), taking a reference on
   * it: QEMU's BlockBackend over an existing node. `internal`: a drive for a user such as an
   * export, not listed by {@link listDrives} (its id may repeat a listed one's).
   */
  attachDrive(node: BlockNode | string, options: { id?: string; throttle?: DriveOwnOptions['throttle']; internal?: boolean } = {}): Drive {
    if (this.closed) throw this.closedError('attachDrive');
    const target = typeof node === 'string' ? this.findNode(node) : node;
    if (target === undefined) throw new BlockError('ENOENT', `Cannot find device='' nor node-name='${String(node)}'`, { field: 'node-name' });
    const internal = options.internal ?? false;
    let id = options.id;
    if (id === undefined) {
      do id = `drive${this.nextId++}`;
      while (this.drives.has(id));
    } else if (!internal && this.drives.has(id)) throw new BlockError('EINVAL', `id: a drive named '${id}' already exists`, { field: 'id' });
    const limits = options.throttle === undefined ? undefined : parseOptions(throttleOptionsSchema, options.throttle, 'throttle');
    target.ref();
    const drive = this.makeDrive(id, target, {}, internal);
    if (limits !== undefined) {
      try {
        drive.setLimits(limits);
      } catch (e) {
        void drive.close();
        throw e;
      }
    }
    if (!internal) for (const listener of this.openListeners) listener(drive);
    return drive;
  }

  /**
   * Every drive (internal ones included) whose root is `from` gets `to` instead, each in a
   * drained section (QEMU bdrv_replace_node, for the BlockBackends): how a mirror pivots, an
   * active commit ends, an external snapshot takes effect. Returns the drives moved. `inDrain`
   * (optional) runs while every one of them is drained, before they move.
   */
  async replaceNode(from: BlockNode, to: BlockNode, inDrain?: () => Promise<void>): Promise<Drive[]> {
    const users = [...this.drives.values(), ...this.internalDrives].filter((d) => !d.closed && d.node === from);
    if (inDrain === undefined) {
      for (const d of users) await d.replaceNode(to);
      return users;
    }
    // Drained sections nest: `inDrain` runs inside all of them, then each drive moves as its section ends.
    const nest = async (i: number): Promise<void> => (i === users.length ? inDrain() : users[i].replaceNode(to, () => nest(i + 1)));
    await nest(0);
    return users;
  }

  /** Whether `drive` is listed by {@link listDrives} (not an export's internal drive). */
  isListedDrive(drive: Drive): boolean {
    return this.drives.get(drive.id) === drive;
  }

  /** The root node of the listed, open drive with that id. */
  driveRoot(id: string): BlockNode | undefined {
    const d = this.drives.get(id);
    return d === undefined || d.closed ? undefined : d.node;
  }

  /** Starts a block job (stream, commit, mirror, backup) on this layer's nodes; see {@link JobSpec}. */
  startJob(spec: JobSpec): Promise<Job> {
    if (this.closed) return Promise.reject(this.closedError('startJob'));
    return startJob(this, spec);
  }

  /**
   * Whether `node` is a root node (QEMU bdrv_is_root_node): no node of the layer, job filter or
   * running job (its source, target or chain) above it. Mirror, commit and internal snapshots
   * need one ("Need a root block node").
   */
  isRootNode(node: BlockNode): boolean {
    return isRootNode(this, node);
  }

  /** Drives whose root is `node` (internal ones included). */
  drivesOn(node: BlockNode): Drive[] {
    return [...this.drives.values(), ...this.internalDrives].filter((d) => !d.closed && d.node === node);
  }

  /** Calls `listener` with every drive opened from now on; returns the function that stops it. */
  onDriveOpened(listener: (drive: Drive) => void): () => void {
    this.openListeners.add(listener);
    return () => this.openListeners.delete(listener);
  }

  /** Runs an open so that close() can wait for it; refuses it once the layer is closing. */
  private track<T>(open: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(this.closedError('open'));
    const p = open();
    this.opening.add(p);
    const forget = () => this.opening.delete(p);
    p.then(forget, forget);
    return p;
  }

  private closedError(what: string): BlockError {
    return new BlockError('ECLOSED', `${what}: the block layer is closed`);
  }

  /** True once close() was called: opens are refused, drives opening meanwhile are closed. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Creates a named throttle group with limits (QEMU object-add throttle-group); drives and throttle nodes join it by name. */
  createThrottleGroup(name: string, limits: ThrottleLimits = {}): ThrottleGroup {
    if (this.closed) throw this.closedError('createThrottleGroup');
    return this.groups.create(name, limits);
  }

  /** The throttle group with that name, if any. */
  throttleGroup(name: string): ThrottleGroup | undefined {
    return this.groups.get(name);
  }

  /** Deletes an explicitly created group; EBUSY while members use it. */
  deleteThrottleGroup(name: string): void {
    this.groups.delete(name);
  }

  /** The open drive with that id. */
  drive(id: string): Drive | undefined {
    return this.drives.get(id);
  }

  /** All open drives. */
  listDrives(): Drive[] {
    return [...this.drives.values()];
  }

  /**
   * Closes the layer: refuses new opens, waits for opens in progress (what they open is closed
   * and they fail with ECLOSED), then closes every drive.
   */
  async close(): Promise<void> {
    this.closed = true;
    while (this.opening.size > 0) await Promise.allSettled([...this.opening]);
    await this.jobs.cancelAll();
    await Promise.all([...this.drives.values(), ...this.internalDrives].map((d) => d.close()));
    const owned = [...this.ownedNodes.values()];
    this.ownedNodes.clear();
    for (const n of owned) await n.unref().catch(() => undefined);
  }

  /** Closes the layer, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

let defaultLayer: BlockLayer | undefined;

/** The process-wide layer used by {@link openDrive}. */
export function getDefaultLayer(): BlockLayer {
  if (defaultLayer === undefined || defaultLayer.isClosed) defaultLayer = new BlockLayer();
  return defaultLayer;
}

/** Opens a drive on the default layer (or the given one): the short way. */
export function openDrive(options: BuiltinDriveOptions, layer?: BlockLayer): Promise<Drive>;
/** {@link BlockLayer.openDrive} of a custom driver (or untyped options) on the default layer, or on `layer`. */
export function openDrive<const O extends DriveOptions>(options: KeyCheckedOptions<O, keyof DriveOwnOptions>, layer?: BlockLayer): Promise<Drive>;
export function openDrive(options: DriveOptions | BuiltinDriveOptions, layer: BlockLayer = getDefaultLayer()): Promise<Drive> {
  return layer.openDrive(options as DriveOptions);
}

/**
 * Opens a disk image by path (format probed: qcow2 or raw), `rbd:pool/image` spec, `nbd://` or `http(s)://` URL (read-only), with
 * extra drive options (id, throttle, readOnly…): the shortest way for an emulator.
 */
export async function openImage(target: string, options: Omit<DriveOptions, 'driver'> & { format?: string } = {}, layer: BlockLayer = getDefaultLayer()): Promise<Drive> {
  const { format, ...rest } = options;
  let base = imageOptions(target, { format }) as DriveOptions;
  // A local image, an NBD export or an rbd image (not a snapshot) opens read-write unless asked otherwise
  // (imageOptions is read-only for the CLI's readers); http is read-only, and a qcow2 found by probing an NBD
  // export stays read-only as before: there the format is probed first, as the connection's mode depends on it.
  let protocol = (base.file as NodeOptions | undefined)?.driver;
  if (base.driver === PROBE_DRIVER && protocol === 'nbd') {
    base = imageOptions(target, { format: await probeImageFormat((o) => layer.openNode(o), layer.drivers.list(), base.file as NodeOptions) }) as DriveOptions;
    protocol = (base.file as NodeOptions | undefined)?.driver;
  }
  const writableRbd = base.driver === 'rbd' && base.snapshot === undefined;
  const ofImage = base.driver === 'raw' || base.driver === 'qcow2' || base.driver === PROBE_DRIVER;
  if ((ofImage && protocol !== 'http' && protocol !== 'nbd') || base.driver === 'nbd' || writableRbd) {
    delete base.readOnly;
    if (base.file) delete (base.file as Record<string, unknown>).readOnly;
  }
  return layer.openDrive({ ...base, ...rest } as DriveOptions);
}
