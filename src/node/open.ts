import * as z from 'zod';
import type { Clock } from '../clock.js';
import { BlockError } from '../errors.js';
import { parseOptions } from '../options/zod-error.js';
import type { BlockDriver, DriverCapabilities, NodeOptions, OpenContext, ParentLink } from './driver.js';
import { BlockNode } from './node.js';
import { PROBE_DRIVER, probeNode } from './probe.js';
import type { DriverRegistry } from './registry.js';

/** What opening a tree of nodes needs from its BlockLayer. */
export interface OpenEnvironment {
  readonly registry: DriverRegistry;
  readonly clock: Clock;
  /** Names in use; a user-given name must be unique, a missing one is generated. */
  readonly nodeNames: Set<string>;
}

const GENERIC_KEYS = new Set(['driver', 'nodeName', 'readOnly']);
let anonymous = 0;

/**
 * Deepest option tree accepted, in levels (the top node is level 1). Twice qcow2's
 * MAX_CHAIN_DEPTH, so that a full backing chain (each image one level deeper, its file one
 * more) still opens under a few filters; deeper or cyclic trees are refused before they can
 * exhaust the stack.
 */
export const MAX_TREE_DEPTH = 128;

/** Where in the tree a node's options sit: the option objects above it (for cycles) and its level. */
interface TreePosition {
  readonly ancestors: ReadonlySet<object>;
  readonly level: number;
  readonly parent?: ParentLink;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Opens a node and, first, its children (QEMU blockdev-add style: children are nested option
 * objects under their role). `field` is the dotted path of these options, for error messages.
 */
export function openNode(env: OpenEnvironment, options: unknown, field = '', parentReadOnly?: boolean): Promise<BlockNode> {
  return openInTree(env, options, field, parentReadOnly, { ancestors: new Set(), level: 1 });
}

async function openInTree(
  env: OpenEnvironment,
  options: unknown,
  field: string,
  parentReadOnly: boolean | undefined,
  position: TreePosition,
): Promise<BlockNode> {
  const at = (key: string) => (field ? `${field}.${key}` : key);
  if (!isRecord(options)) throw new BlockError('EINVAL', `${field || 'options'}: must be an object with a 'driver'`, { field });
  if (position.ancestors.has(options)) {
    throw new BlockError('EINVAL', `${field}: the options contain themselves (a cycle back to an enclosing node)`, { field });
  }
  if (position.level > MAX_TREE_DEPTH) {
    throw new BlockError('EINVAL', `${field}: options nested deeper than ${MAX_TREE_DEPTH} levels`, { field });
  }
  const ancestors = new Set(position.ancestors).add(options);
  if (options.driver === PROBE_DRIVER) return openProbed(env, options, field, parentReadOnly, position, ancestors);
  const below = (role: string): TreePosition => ({ ancestors, level: position.level + 1, parent: { capabilities: driver.capabilities, role } });
  if (typeof options.driver !== 'string') {
    throw new BlockError('EINVAL', `${at('driver')}: required`, { field: at('driver') });
  }
  const driver = env.registry.get(options.driver, at('driver'));
  if (options.readOnly !== undefined && typeof options.readOnly !== 'boolean') {
    throw new BlockError('EINVAL', `${at('readOnly')}: must be a boolean`, { field: at('readOnly') });
  }
  if (options.nodeName !== undefined && (typeof options.nodeName !== 'string' || options.nodeName === '')) {
    throw new BlockError('EINVAL', `${at('nodeName')}: must be a non-empty string`, { field: at('nodeName') });
  }
  let readOnly = resolveReadOnly(driver, options.readOnly as boolean | undefined, parentReadOnly, at('readOnly'));

  const roles = driver.children ?? {};
  // Own properties only: a key named like an Object.prototype member (`constructor`, `toString`)
  // is not a child role, and `__proto__` from JSON stays a key (an assignment would drop it).
  const own: Record<string, unknown> = Object.fromEntries(Object.entries(options).filter(([key]) => !GENERIC_KEYS.has(key) && !Object.hasOwn(roles, key)));
  const driverOptions = parseOptions(driver.schema, own, field);

  let nodeName = options.nodeName as string | undefined;
  if (nodeName === undefined) {
    do nodeName = `#${driver.name}${anonymous++}`;
    while (env.nodeNames.has(nodeName));
  } else if (env.nodeNames.has(nodeName)) {
    throw new BlockError('EINVAL', `${at('nodeName')}: a node named '${nodeName}' already exists`, { field: at('nodeName') });
  }
  // Reserved now, before the children open and across the awaits below: a child or a
  // concurrent open asking for the same name is refused. Released if the open fails.
  const name = nodeName;
  env.nodeNames.add(name);

  let node: BlockNode;
  const children = new Map<string, BlockNode>();
  const disabledChildren = new Set<string>();
  const releaseChildren = async () => {
    for (const child of children.values()) await child.unref().catch(() => undefined);
  };
  try {
    for (const [role, need] of Object.entries(roles)) {
      const childOptions = options[role];
      if (childOptions === null) {
        if (need === 'required') throw new BlockError('EINVAL', `${at(role)}: required: a ${driver.name} node cannot do without its ${role}`, { field: at(role) });
        disabledChildren.add(role);
        continue;
      }
      if (childOptions === undefined) {
        if (need === 'required') throw new BlockError('EINVAL', `${at(role)}: required`, { field: at(role) });
        continue;
      }
      children.set(role, await openChildInTree(env, childOptions, role, at(role), readOnly, below(role)));
    }
    if (!readOnly) readOnly = checkMetadataChild(driver, children, at('file'), options.readOnly === undefined);
    const ctx: OpenContext<unknown> = {
      options: driverOptions,
      children,
      readOnly,
      nodeName: name,
      disabledChildren,
      clock: env.clock,
      ...(position.parent === undefined ? {} : { parent: position.parent }),
      openChild: async (role: string, childOptions: NodeOptions) => {
        if (children.has(role)) throw new BlockError('EINVAL', `${at(role)}: child already open`, { field: at(role) });
        const child = await openInTree(env, childOptions, at(role), readOnly, below(role));
        children.set(role, child);
        return child;
      },
    };
    const instance = await driver.open(ctx as OpenContext<never>);
    try {
      node = new BlockNode(name, driver, instance, children, readOnly, options, nameReleaser(env.nodeNames, name));
    } catch (e) {
      await instance.close().catch(() => undefined);
      throw e;
    }
  } catch (e) {
    env.nodeNames.delete(name);
    await releaseChildren();
    throw e;
  }
  try {
    await node.bitmaps.load();
  } catch (e) {
    // The node owns its instance and children now: unref closes them all.
    await node.unref().catch(() => undefined);
    throw e;
  }
  return node;
}

/**
 * The format is not known while the file child opens: it opens as under a format that keeps
 * metadata (qcow2's stricter permissions), the safe side for either answer.
 */
const PROBING_PARENT: DriverCapabilities = { kind: 'format', keepsMetadata: true };

/**
 * `driver: 'auto'` (QEMU's format probing): opens the `file` child, reads its first bytes, asks
 * every format driver's `probe` and opens the winner over that same child with the other options,
 * plus `formatOptions[<its name>]` (options for one format only, e.g. qcow2's). `snapshot` (an
 * internal snapshot to open) is refused when the winner has no such option.
 */
async function openProbed(
  env: OpenEnvironment,
  options: Record<string, unknown>,
  field: string,
  parentReadOnly: boolean | undefined,
  position: TreePosition,
  ancestors: ReadonlySet<object>,
): Promise<BlockNode> {
  const at = (key: string) => (field ? `${field}.${key}` : key);
  const { driver: _, file, formatOptions, ...rest } = options;
  if (file === undefined || file === null) {
    throw new BlockError('EINVAL', `${at('file')}: required: probing reads the format from the file child`, { field: at('file') });
  }
  if (options.readOnly !== undefined && typeof options.readOnly !== 'boolean') {
    throw new BlockError('EINVAL', `${at('readOnly')}: must be a boolean`, { field: at('readOnly') });
  }
  const readOnly = (options.readOnly as boolean | undefined) ?? parentReadOnly ?? false;
  const below: TreePosition = { ancestors, level: position.level + 1, parent: { capabilities: PROBING_PARENT, role: 'file' } };
  const child = await openChildInTree(env, file, 'file', at('file'), readOnly, below);
  try {
    const format = await probeNode(env.registry.list(), child);
    if (rest.snapshot !== undefined && !takesOption(format, 'snapshot')) {
      throw new BlockError('EINVAL', `--snapshot: ${format.name} images have no snapshots`, { field: 'snapshot' });
    }
    const own = isRecord(formatOptions) && isRecord(formatOptions[format.name]) ? formatOptions[format.name] : {};
    return await openInTree(env, { ...rest, ...(own as object), driver: format.name, file: child }, field, parentReadOnly, position);
  } finally {
    // The format node holds its own reference now (or failed to open: then this closes the child).
    await child.unref();
  }
}

function takesOption(driver: BlockDriver, key: string): boolean {
  return driver.schema instanceof z.ZodObject && Object.hasOwn(driver.schema.shape, key);
}

/**
 * A read-write format that keeps metadata in its file (qcow2, vmdk, …) writes that file whether
 * or not anyone writes the format node (QEMU: it takes the WRITE permission on its file child at
 * open, bdrv_default_perms_for_storage): a file child that refuses writes (read-only itself or
 * through a node below it) refuses the format node, with QEMU's "Block node is read-only". A
 * format without metadata (raw) and a filter only write their file when written: QEMU accepts
 * them over a read-only file, and so do we (their writes fail with EROFS there). Returns whether
 * the format opens read-only instead (`modeFree`: its options left the mode to us).
 */
function checkMetadataChild(driver: BlockDriver, children: ReadonlyMap<string, BlockNode>, field: string, modeFree: boolean): boolean {
  if (driver.capabilities.keepsMetadata !== true) return false;
  const blocker = children.get('file')?.writeBlocker();
  if (blocker === undefined) return false;
  // Over a driver that never writes (http), a format whose mode nobody set opens read-only: an
  // image served over http is read, not refused. (QEMU's auto-read-only stops at the protocol node
  // and refuses the format; an explicit read-write here is refused as QEMU does.)
  if (modeFree && blocker.driver.capabilities.readOnly === true) return true;
  throw new BlockError('EROFS', 'Block node is read-only', { node: blocker.name, field });
}

/**
 * A child given as options is opened; one given as an open BlockNode (QEMU: a reference to an
 * existing node) is shared: it gains a reference, released when the parent closes. A shared node
 * keeps its own mode, but a read-write parent cannot write through a read-only child (other than its backing).
 */
async function openChildInTree(env: OpenEnvironment, childOptions: unknown, role: string, field: string, readOnly: boolean, below: TreePosition): Promise<BlockNode> {
  if (childOptions instanceof BlockNode) {
    // A backing node is only ever read; every other role of a read-write node is written. A
    // format that keeps metadata refuses with QEMU's text (see checkMetadataChild).
    if (!readOnly && childOptions.readOnly && role !== 'backing') {
      if (role === 'file' && below.parent?.capabilities.keepsMetadata === true) throw new BlockError('EROFS', 'Block node is read-only', { node: childOptions.name, field });
      throw new BlockError('EINVAL', `${field}: node '${childOptions.name}' is read-only but its parent is read-write`, { field });
    }
    return childOptions.ref();
  }
  return openInTree(env, childOptions, field, readOnly, below);
}

/**
 * The function that frees a node's name when it closes, made outside openInTree: a closure made
 * there would keep that whole open's scope (its option sets, helpers, children map) alive as
 * long as the node lives.
 */
function nameReleaser(names: Set<string>, name: string): () => void {
  return () => names.delete(name);
}

function resolveReadOnly(driver: BlockDriver, asked: boolean | undefined, parent: boolean | undefined, field: string): boolean {
  if (driver.capabilities.readOnly) {
    if (asked === false) {
      throw new BlockError('EROFS', `${field}: the ${driver.name} driver opens images read-only only`, { field });
    }
    return true;
  }
  // A child inherits its parent's mode unless told otherwise: a read-write child under a read-only
  // parent is opened read-write (QEMU too: the parent just never writes it).
  return asked ?? parent ?? false;
}
