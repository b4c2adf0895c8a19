/**
 * QMP's internal snapshot commands (QEMU 7.2 blockdev.c): blockdev-snapshot-internal-sync and
 * blockdev-snapshot-delete-internal-sync, with QEMU's checks in its order and its error texts.
 * `device` is a drive id or the node name of a root node (QEMU qmp_get_root_bs); a filter on
 * top hands the snapshot to the node it filters (QEMU bdrv_snapshot_fallback).
 */
import { isBlockError } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import type { InternalSnapshotInfo } from '../node/types.js';
import { type Args, generic, only, str } from './qapi-args.js';

/** QAPI BlockdevSnapshotInternal. */
export interface InternalSnapshotArgs {
  device: string;
  name: string;
}

/** QAPI's arguments of blockdev-snapshot-delete-internal-sync. */
export interface InternalSnapshotDeleteArgs {
  device: string;
  id?: string;
  name?: string;
}

export function parseInternalSnapshot(args: Args, path = ''): InternalSnapshotArgs {
  const out = { device: str(args, 'device', true, path), name: str(args, 'name', true, path) };
  only(args, ['device', 'name'], path);
  return out;
}

export function parseInternalSnapshotDelete(args: Args): InternalSnapshotDeleteArgs {
  const out: InternalSnapshotDeleteArgs = { device: str(args, 'device', true) };
  const id = str(args, 'id', false);
  const name = str(args, 'name', false);
  only(args, ['device', 'id', 'name']);
  if (id !== undefined) out.id = id;
  if (name !== undefined) out.name = name;
  return out;
}

/** QEMU qmp_get_root_bs: a drive id, else the node name of a root node (a drive's, or one blockdev-add added with no parent). */
export function findRootNode(layer: BlockLayer, device: string): BlockNode {
  const drive = layer.drive(device);
  const found = drive !== undefined && !drive.closed ? drive.node : layer.findNode(device);
  if (found === undefined) throw generic(`Cannot find device='${device}' nor node-name='${device}'`);
  if (!layer.isRootNode(found)) throw generic('Need a root block node');
  return found;
}

/** The node that keeps the snapshots: the root, or the first node below its filters that has them. */
function snapshotNode(root: BlockNode): BlockNode | undefined {
  for (let n: BlockNode | undefined = root; n; n = n.driver.capabilities.kind === 'filter' ? n.child('file') : undefined) {
    if (n.snapshots) return n;
  }
  return undefined;
}

/** QAPI SnapshotInfo (icount only when recorded). */
export function qapiSnapshot(s: InternalSnapshotInfo): Record<string, unknown> {
  return {
    id: s.id,
    name: s.name,
    'vm-state-size': s.vmStateSize,
    'date-sec': s.date.sec,
    'date-nsec': s.date.nsec,
    'vm-clock-sec': Math.floor(s.vmClockNs / 1e9),
    'vm-clock-nsec': s.vmClockNs % 1e9,
    ...(s.icount === -1 ? {} : { icount: s.icount }),
  };
}

/** A BlockError from the driver as QMP's GenericError, QEMU's prefix in front (error_setg_errno). */
function failed(prefix: string, e: unknown): never {
  if (isBlockError(e)) throw Object.assign(generic(`${prefix}: ${e.message}`), { cause: e });
  throw e;
}

/** blockdev-snapshot-internal-sync: a snapshot of the device's current state, taken now. */
export async function internalSnapshotSync(layer: BlockLayer, args: InternalSnapshotArgs): Promise<InternalSnapshotInfo> {
  return (await takeInternalSnapshot(layer, args)).taken;
}

/**
 * The `transaction` action (QEMU internal_snapshot_prepare / _abort): the snapshot is taken when
 * prepared; abort deletes it again (a promise: the deletion writes to the image), commit keeps it.
 */
export async function prepareInternalSnapshot(layer: BlockLayer, args: InternalSnapshotArgs): Promise<{ commit(): void; abort(): Promise<void> }> {
  const { node, taken } = await takeInternalSnapshot(layer, args);
  return {
    commit() {},
    async abort() {
      await node.snapshots?.delete(taken.id, taken.name);
    },
  };
}

async function takeInternalSnapshot(layer: BlockLayer, args: InternalSnapshotArgs): Promise<{ node: BlockNode; taken: InternalSnapshotInfo }> {
  const { device, name } = args;
  const root = findRootNode(layer, device);
  if (root.readOnly) throw generic(`Device '${device}' is read only`);
  const node = snapshotNode(root);
  if (!node?.snapshots || node.readOnly) throw generic(`Block format '${root.driver.name}' used by device '${device}' does not support internal snapshots`);
  if (name === '') throw generic('Name is empty');
  if (node.snapshots.list().some((s) => s.name === name)) throw generic(`Snapshot with name '${name}' already exists on device '${device}'`);
  // QEMU's date and virtual clock (qemu-storage-daemon's runs with the host's), icount unknown.
  const ms = Date.now();
  const date = { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 };
  const taken = await node.snapshots.create({ name, date, vmClockNs: ms * 1e6, icount: -1 }).catch((e: unknown) => failed(`Failed to create snapshot '${name}' on device '${device}'`, e));
  return { node, taken };
}

/** blockdev-snapshot-delete-internal-sync: deletes the snapshot with this id and/or name; returns what it was. */
export async function internalSnapshotDeleteSync(layer: BlockLayer, args: InternalSnapshotDeleteArgs): Promise<Record<string, unknown>> {
  const { device, id, name } = args;
  const root = findRootNode(layer, device);
  if (id === undefined && name === undefined) throw generic('Name or id must be provided');
  const node = snapshotNode(root);
  if (!node?.snapshots) throw generic('Failed to get a snapshot list: Operation not supported');
  const found = node.snapshots.list().find((s) => (id === undefined || s.id === id) && (name === undefined || s.name === name));
  if (!found) throw generic(`Snapshot with id '${id ?? 'null'}' and name '${name ?? 'null'}' does not exist on device '${device}'`);
  await node.snapshots.delete(id, name).catch((e: unknown) => failed(`Failed to delete snapshot`, e));
  return qapiSnapshot(found);
}
