import * as z from 'zod';
import { type Clock, RealClock } from './clock.js';
import { Drive } from './drive.js';
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
  private readonly drives = new Map<string, Drive>();
  private readonly nodeNames = new Set<string>();
  private nextId = 0;
  private closed = false;
  /** Opens in progress: close() waits for them and closes what they made. */
  private readonly opening = new Set<Promise<unknown>>();
  private readonly openListeners = new Set<(drive: Drive) => void>();

  constructor(options: BlockLayerOptions = {}) {
    this.clock = options.clock ?? new RealClock();
    this.groups = new ThrottleGroupRegistry(this.clock);
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
    const drive = new Drive(
      id,
      node,
      {
        clock: this.clock,
        groups: this.groups,
        forget: (d) => {
          if (this.drives.get(d.id) === d) this.drives.delete(d.id);
        },
      },
      policy,
    );
    this.drives.set(id, drive);
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
    await Promise.all([...this.drives.values()].map((d) => d.close()));
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
