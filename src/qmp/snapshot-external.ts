/**
 * External snapshots (QEMU blockdev.c external_snapshot_*): blockdev-snapshot-sync makes a qcow2
 * overlay whose backing file is the node's image, blockdev-snapshot takes an overlay added with
 * blockdev-add (`backing: null`); either way the overlay gets the node as its backing child and
 * the node's users (drives, exports) move to the overlay. Prepared first (created, opened,
 * checked) and committed only when every action of a transaction is prepared.
 */
import { isBlockError } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import type { NodeOptions } from '../node/driver.js';
import { createImage } from '../tools/create.js';
import { lookupNode } from './blockdev-commands.js';
import { type Args, generic, only, str } from './qapi-args.js';

/** QAPI BlockdevSnapshotSync. */
export interface SnapshotSyncArgs {
  device?: string;
  nodeName?: string;
  snapshotFile: string;
  snapshotNodeName?: string;
  format: string;
  mode: 'existing' | 'absolute-paths';
}

/** QAPI BlockdevSnapshot. */
export interface SnapshotArgs {
  node: string;
  overlay: string;
}

/** A snapshot ready to take effect; `commit` moves the users, `abort` undoes the preparation. */
export interface PreparedSnapshot {
  commit(): Promise<void>;
  abort(): Promise<void>;
}

export function parseSnapshotSync(args: Args, path = ''): SnapshotSyncArgs {
  const device = str(args, 'device', false, path);
  const nodeName = str(args, 'node-name', false, path);
  const snapshotFile = str(args, 'snapshot-file', true, path);
  const snapshotNodeName = str(args, 'snapshot-node-name', false, path);
  const format = str(args, 'format', false, path) ?? 'qcow2';
  const mode = str(args, 'mode', false, path) ?? 'absolute-paths';
  if (mode !== 'existing' && mode !== 'absolute-paths') throw generic(`Parameter 'mode' does not accept value '${mode}'`);
  only(args, ['device', 'node-name', 'snapshot-file', 'snapshot-node-name', 'format', 'mode'], path);
  return {
    ...(device !== undefined ? { device } : {}),
    ...(nodeName !== undefined ? { nodeName } : {}),
    snapshotFile,
    ...(snapshotNodeName !== undefined ? { snapshotNodeName } : {}),
    format,
    mode,
  };
}

export function parseSnapshot(args: Args, path = ''): SnapshotArgs {
  const node = str(args, 'node', true, path);
  const overlay = str(args, 'overlay', true, path);
  only(args, ['node', 'overlay'], path);
  return { node, overlay };
}

/** The image file a node reads (QEMU bs->filename), for the overlay's backing file name. */
function imageFilename(node: BlockNode): string | undefined {
  for (let n: BlockNode | undefined = node; n; n = n.child('file')) {
    const f = n.options.filename;
    if (typeof f === 'string') return f;
  }
  return undefined;
}

/** QEMU's op blocker for a snapshot of a node another node uses as its backing ("busy"). */
function refuseBusy(layer: BlockLayer, node: BlockNode): void {
  const parent = layer.listNodes().find((n) => n.child('backing') === node);
  if (parent !== undefined) throw generic(`Node '${node.name}' is busy: node is used as backing hd of '${parent.name}'`);
}

/** blockdev-snapshot-sync: the overlay file made (or taken, mode existing) and opened over the node; the users move on commit. */
export async function prepareSnapshotSync(layer: BlockLayer, a: SnapshotSyncArgs): Promise<PreparedSnapshot> {
  // QEMU looks the device up as a drive id and the node by name, and names both in its error.
  const node = a.device !== undefined ? layer.driveRoot(a.device) : a.nodeName !== undefined ? layer.findNode(a.nodeName) : undefined;
  if (node === undefined) throw generic(`Cannot find device='${a.device ?? ''}' nor node-name='${a.nodeName ?? ''}'`);
  refuseBusy(layer, node);
  if (a.snapshotNodeName === undefined) throw generic('New overlay node-name missing');
  if (lookupNode(layer, a.snapshotNodeName) !== undefined) throw generic('New overlay node-name already in use');
  if (a.format !== 'qcow2') throw generic(`Parameter 'format': only qcow2 overlays are supported by this server, not '${a.format}'`);
  if (!node.readOnly) await node.flush();
  if (a.mode === 'absolute-paths') {
    const backing = imageFilename(node);
    if (backing === undefined) throw generic(`Node '${node.name}' has no image file to name as the overlay's backing file`);
    try {
      await createImage(a.snapshotFile, { format: 'qcow2', size: node.length, backing, backingFormat: node.driver.name as 'qcow2' | 'raw' }, { layer });
    } catch (e) {
      throw isBlockError(e) ? generic(`Could not create '${a.snapshotFile}': ${e.message}`) : e;
    }
  }
  let overlay: BlockNode;
  try {
    overlay = await layer.openNode({ driver: 'qcow2', nodeName: a.snapshotNodeName, file: { driver: 'file', filename: a.snapshotFile }, backing: node } as NodeOptions);
  } catch (e) {
    if (isBlockError(e) && e.path !== undefined && e.code === 'ENOENT') throw generic(`Could not open '${e.path}': No such file or directory`);
    if (isBlockError(e, 'EINVAL') && e.field === 'nodeName') throw generic('New overlay node-name already in use');
    throw e;
  }
  return {
    async commit() {
      await layer.replaceNode(node, overlay);
      // The users hold it now; with none, it goes (QEMU drops an overlay nothing uses).
      await overlay.unref();
    },
    abort: () => overlay.unref(),
  };
}

/**
 * blockdev-snapshot: the overlay (a node the monitor added, opened without a backing child) is
 * reopened with the node as its backing child, keeping its name; its users move on commit.
 */
export async function prepareSnapshot(layer: BlockLayer, a: SnapshotArgs): Promise<PreparedSnapshot> {
  const node = lookupNode(layer, a.node);
  if (node === undefined) throw generic(`Cannot find device='${a.node}' nor node-name='${a.node}'`);
  refuseBusy(layer, node);
  const overlay = lookupNode(layer, a.overlay);
  if (overlay === undefined) throw generic(`Cannot find device='${a.overlay}' nor node-name='${a.overlay}'`);
  if (!node.readOnly) await node.flush();
  if (layer.drivesOn(overlay).length > 0 || overlay.refCount > 1 || !layer.ownsNode(overlay.name)) throw generic('The overlay is already in use');
  if (overlay.child('backing') !== undefined) throw generic('The overlay already has a backing image');
  if (overlay.driver.capabilities.supportsBacking !== true) throw generic('The overlay does not support backing images');
  if (overlay === node) throw generic('The overlay is already in use');
  const before = overlay.options as NodeOptions;
  const reopened = await reopen(layer, overlay, { ...before, backing: node });
  return {
    commit: async () => {
      await layer.replaceNode(node, reopened);
    },
    abort: async () => {
      await reopen(layer, reopened, before);
    },
  };
}

/**
 * Closes the monitor's node and opens it again, same name, with `options`; if that fails, with
 * its previous options. Children its options name as open nodes outlive the reopen; inline
 * ones are opened again.
 */
async function reopen(layer: BlockLayer, node: BlockNode, options: NodeOptions): Promise<BlockNode> {
  const previous = node.options as NodeOptions;
  const shared = [...node.children.values()].filter((c) => Object.values(previous).includes(c));
  for (const c of shared) c.ref();
  try {
    await layer.deleteNode(node.name);
    try {
      return await layer.addNode(options);
    } catch (e) {
      await layer.addNode(previous).catch(() => undefined);
      throw e;
    }
  } finally {
    for (const c of shared) await c.unref();
  }
}

/** The commands, run on their own (a transaction of one). */
export const SNAPSHOT_HANDLERS: readonly [string, (args: Args, layer: BlockLayer) => unknown][] = [
  [
    'blockdev-snapshot-sync',
    async (args, layer) => {
      await (await prepareSnapshotSync(layer, parseSnapshotSync(args))).commit();
      return {};
    },
  ],
  [
    'blockdev-snapshot',
    async (args, layer) => {
      await (await prepareSnapshot(layer, parseSnapshot(args))).commit();
      return {};
    },
  ],
];
