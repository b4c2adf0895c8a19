/**
 * QMP blockdev-reopen (QEMU 7.2 qmp_blockdev_reopen): each item of `options` is the full option
 * tree of an existing node, as blockdev-add took it. What can change here is `read-only`, and a
 * backing node set to null (detached); children given inline are compared as their own trees.
 * Anything else that differs is refused with QEMU's "Cannot change the option 'x'". Items are
 * applied in order; a failure switches the nodes already reopened back.
 */
import { isBlockError } from '../errors.js';
import { reopenQuiet } from '../jobs/reopen-quiet.js';
import type { BlockLayer } from '../layer.js';
import { BlockNode } from '../node/node.js';
import type { NodeOptions } from '../node/types.js';
import { lookupNode } from './blockdev-commands.js';
import { translateBlockdevOptions } from './blockdev-options.js';
import { type Args, generic, only } from './qapi-args.js';
import { QmpError } from './wire.js';

/** Members of a translated option tree that are not the driver's own options. */
const GENERIC = new Set(['driver', 'nodeName', 'readOnly']);

/** One node's change: its new mode, a backing child to drop. */
interface Change {
  readonly node: BlockNode;
  readonly readOnly: boolean;
  dropBacking: boolean;
}

/** Our option name as QAPI spells it (l2CacheSize → l2-cache-size). */
const qapiName = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** QEMU's texts name a member by its path in the command (`options[0].bogus`). */
function prefixed(e: unknown, at: string): unknown {
  if (!(e instanceof QmpError)) return e;
  const desc = e.message.replace(/^(Parameter |Invalid parameter type for )'([^']*)'/, (_m, lead: string, path: string) => `${lead}'${at}${path}'`);
  return new QmpError(e.errorClass, desc);
}

/**
 * The changes `options` (translated) asks of `node`, children given inline included (they inherit
 * the mode unless they set their own); `path` prefixes QEMU's option names (`file.`).
 */
function changesOf(node: BlockNode, options: NodeOptions, path: string, inherited: boolean | undefined, out: Change[]): void {
  if (options.driver !== node.driver.name) throw generic(`Cannot change the option '${path}driver'`);
  const readOnly = options.readOnly ?? inherited ?? false;
  // The parent first: its reopen takes the children opened with it along, whichever way it goes.
  const change: Change = { node, readOnly, dropBacking: false };
  out.push(change);
  const roles = new Set([...node.children.keys(), ...Object.keys(node.options).filter((k) => node.options[k] instanceof BlockNode || node.options[k] === null)]);
  for (const role of roles) {
    const given = options[role];
    const child = node.child(role);
    if (given === undefined) {
      if (role === 'backing' && child !== undefined) throw generic(`backing is missing for '${node.name}'`);
      if (child !== undefined) throw generic(`Parameter '${path}${role}' is missing`);
      continue;
    }
    if (given === null) {
      if (role !== 'backing') throw generic(`Cannot change the option '${path}${role}'`);
      change.dropBacking = child !== undefined;
      continue;
    }
    if (given instanceof BlockNode) {
      if (given !== child) throw generic(`Cannot change the option '${path}${role}'`);
      continue;
    }
    // A child given by reference cannot become one given inline: QEMU names its first member.
    if (child === undefined || node.options[role] instanceof BlockNode) throw generic(`Cannot change the option '${path}${role}.driver'`);
    const childOptions = given as NodeOptions;
    if (childOptions.nodeName !== undefined && childOptions.nodeName !== child.name) throw generic(`Cannot change the option '${path}${role}.node-name'`);
    changesOf(child, childOptions, `${path}${role}.`, role === 'backing' ? true : readOnly, out);
  }
  for (const key of new Set([...Object.keys(options), ...Object.keys(node.options)])) {
    if (GENERIC.has(key) || roles.has(key) || node.children.has(key)) continue;
    if (!sameValue(options[key], node.options[key])) throw generic(`Cannot change the option '${path}${qapiName(key)}'`);
  }
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  return JSON.stringify(a) === JSON.stringify(b);
}

/** blockdev-reopen. */
export async function blockdevReopen(layer: BlockLayer, args: Args): Promise<Record<string, never>> {
  if (args.options === undefined) throw generic("Parameter 'options' is missing");
  only(args, ['options']);
  const items = args.options;
  if (!Array.isArray(items)) throw generic("Invalid parameter type for 'options', expected: array");
  // The whole list is read and checked before anything changes (QAPI visits it first).
  const plans: Change[][] = items.map((item, i) => {
    const at = `options[${i}].`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw generic(`Invalid parameter type for 'options[${i}]', expected: object`);
    const name = (item as Args)['node-name'];
    if (name === undefined) throw generic('node-name not specified');
    if (typeof name !== 'string') throw generic(`Invalid parameter type for '${at}node-name', expected: string`);
    let options: NodeOptions;
    try {
      options = translateBlockdevOptions(item as Args, (n) => lookupNode(layer, n)).options;
    } catch (e) {
      throw prefixed(e, at);
    }
    const node = layer.findNode(name);
    if (node === undefined) throw generic(`Failed to find node with node-name='${name}'`);
    const changes: Change[] = [];
    changesOf(node, options, '', undefined, changes);
    return changes;
  });
  const users = layer.listNodes();
  const done: Change[] = [];
  try {
    for (const change of plans.flat()) {
      const { node, readOnly } = change;
      if (readOnly && !node.readOnly && layer.drivesOn(node).some((d) => !d.readOnly)) {
        throw generic(`Node '${node.name}' has a writer: it cannot be made read-only`);
      }
      const was = node.readOnly;
      await reopenQuiet(layer, users, node, readOnly);
      done.push({ node, readOnly: was, dropBacking: false });
      if (change.dropBacking) {
        const old = node.swapBacking(null);
        for (const d of layer.drivesOn(node)) await d.drain();
        await old?.unref();
      }
    }
  } catch (e) {
    for (const { node, readOnly } of done.reverse()) await reopenQuiet(layer, users, node, readOnly).catch(() => undefined);
    throw isBlockError(e) ? generic(e.message) : e;
  }
  return {};
}
