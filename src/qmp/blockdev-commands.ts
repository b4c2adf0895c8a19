/**
 * QMP blockdev-add and blockdev-del (QEMU blockdev.c): nodes the monitor owns, added by their
 * QAPI options and removed by name, with QEMU's checks and texts.
 */
import { isBlockError } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import { jobFilterNodes } from '../jobs/job-filter.js';
import { translateBlockdevOptions } from './blockdev-options.js';
import { type Args, generic, only, str } from './qapi-args.js';

/** A drive's root by its id, else the node of that name (QEMU bdrv_lookup_bs). */
export function lookupNode(layer: BlockLayer, name: string): BlockNode | undefined {
  return layer.driveRoot(name) ?? layer.findNode(name);
}

/** strerror's words for the errnos an open commonly meets, for QEMU's "Could not open 'x': …". */
const STRERROR: Readonly<Record<string, string>> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long',
};

/** An open's failure in QEMU's words where QEMU's are known; ours otherwise. */
function openError(e: unknown): unknown {
  if (!isBlockError(e)) return e;
  const words = STRERROR[e.code];
  if (words !== undefined && e.path !== undefined) return generic(`Could not open '${e.path}': ${words}`);
  if (e.code === 'ECORRUPT' && e.field === 'magic' && e.offset === 0) return generic('Image is not in qcow2 format');
  return e;
}

/**
 * blockdev-add: opens the node graph QAPI BlockdevOptions describe and keeps its root by node
 * name. `keyval`: the options come from a command line (`--blockdev k=v,…`), all values strings.
 */
export async function blockdevAdd(layer: BlockLayer, args: Args, keyval = false): Promise<Record<string, never>> {
  const { options, nodeNames } = translateBlockdevOptions(args, (name) => lookupNode(layer, name), keyval);
  const seen = new Set<string>();
  for (const name of nodeNames) {
    if (seen.has(name) || layer.findNode(name) !== undefined || jobFilterNodes(layer.jobs).some((n) => n.name === name)) throw generic(`Duplicate nodes with node-name='${name}'`);
    if (layer.drive(name) !== undefined) throw generic(`node-name=${name} is conflicting with a device id`);
    seen.add(name);
  }
  try {
    await layer.addNode(options);
  } catch (e) {
    throw openError(e);
  }
  return {};
}

/**
 * blockdev-del: QEMU's checks in its order: the node exists, no BlockBackend (drive, export) is on
 * it, the monitor owns it, nothing else holds it (a parent node, a job).
 */
export async function blockdevDel(layer: BlockLayer, args: Args): Promise<Record<string, never>> {
  const name = str(args, 'node-name', true);
  only(args, ['node-name']);
  const node = layer.findNode(name);
  if (node === undefined) throw generic(`Failed to find node with node-name='${name}'`);
  if (layer.drivesOn(node).length > 0) throw generic(`Node ${name} is in use`);
  if (!layer.ownsNode(name)) throw generic(`Node ${name} is not owned by the monitor`);
  if (node.refCount > 1) throw generic(`Block device ${name} is in use`);
  await layer.deleteNode(name);
  return {};
}

/** The commands of this module, for the QMP command table. */
export const BLOCKDEV_HANDLERS: readonly [string, (args: Args, layer: BlockLayer) => unknown][] = [
  ['blockdev-add', (args, layer) => blockdevAdd(layer, args)],
  ['blockdev-del', (args, layer) => blockdevDel(layer, args)],
];
