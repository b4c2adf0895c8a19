import type { Clock } from '../clock.js';
import { BlockError } from '../errors.js';
import { parseOptions } from '../options/zod-error.js';
import type { BlockDriver, NodeOptions, OpenContext } from './driver.js';
import { BlockNode } from './node.js';
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
/** Deepest nesting of child options (a qcow2 chain of 64 images with its files fits). */
const MAX_NESTING = 256;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Opens a node and, first, its children (QEMU blockdev-add style: children are nested option
 * objects under their role). `field` is the dotted path of these options, for error messages.
 */
export async function openNode(
  env: OpenEnvironment,
  options: unknown,
  field = '',
  parentReadOnly?: boolean,
): Promise<BlockNode> {
  const at = (key: string) => (field ? `${field}.${key}` : key);
  // Children are opened recursively: a cyclic or absurdly deep tree must be refused, not overflow the stack.
  if (field !== '' && field.split('.').length > MAX_NESTING) {
    throw new BlockError('EINVAL', `${field}: options nested deeper than ${MAX_NESTING} levels (or cyclic)`, { field });
  }
  if (!isRecord(options)) throw new BlockError('EINVAL', `${field || 'options'}: must be an object with a 'driver'`, { field });
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
  const readOnly = resolveReadOnly(driver, options.readOnly as boolean | undefined, parentReadOnly, at('readOnly'));

  const roles = driver.children ?? {};
  const own: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (!GENERIC_KEYS.has(key) && !(key in roles)) own[key] = value;
  }
  const driverOptions = parseOptions(driver.schema, own, field);

  const nodeName = (options.nodeName as string | undefined) ?? `#${driver.name}${anonymous++}`;
  if (env.nodeNames.has(nodeName)) {
    throw new BlockError('EINVAL', `${at('nodeName')}: a node named '${nodeName}' already exists`, { field: at('nodeName') });
  }

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
      children.set(role, await openNode(env, childOptions, at(role), readOnly));
    }
    const ctx: OpenContext<unknown> = {
      options: driverOptions,
      children,
      readOnly,
      nodeName,
      disabledChildren,
      clock: env.clock,
      openChild: async (role: string, childOptions: NodeOptions) => {
        if (children.has(role)) throw new BlockError('EINVAL', `${at(role)}: child already open`, { field: at(role) });
        const child = await openNode(env, childOptions, at(role), readOnly);
        children.set(role, child);
        return child;
      },
    };
    const instance = await driver.open(ctx as OpenContext<never>);
    env.nodeNames.add(nodeName);
    return new BlockNode(nodeName, driver, instance, children, readOnly, options, () => env.nodeNames.delete(nodeName));
  } catch (e) {
    await releaseChildren();
    throw e;
  }
}

function resolveReadOnly(driver: BlockDriver, asked: boolean | undefined, parent: boolean | undefined, field: string): boolean {
  if (driver.capabilities.readOnly) {
    if (asked === false) {
      throw new BlockError('EROFS', `${field}: the ${driver.name} driver opens images read-only only`, { field });
    }
    return true;
  }
  if (asked !== undefined) {
    if (parent === true && asked === false) {
      throw new BlockError('EINVAL', `${field}: a child of a read-only node cannot be read-write`, { field });
    }
    return asked;
  }
  return parent ?? false;
}
