import type { Qcow2Snapshot } from './snapshots.js';

/** QEMU find_snapshot_by_id_and_name: both must match when both are given. */
export function findByIdAndName(list: readonly Qcow2Snapshot[], id: string | undefined, name: string | undefined): Qcow2Snapshot | undefined {
  if (id !== undefined && name !== undefined) return list.find((s) => s.id === id && s.name === name);
  if (id !== undefined) return list.find((s) => s.id === id);
  if (name !== undefined) return list.find((s) => s.name === name);
  return undefined;
}

/** QEMU find_snapshot_by_id_or_name: an id first, else a name. */
export function findByIdOrName(list: readonly Qcow2Snapshot[], idOrName: string): Qcow2Snapshot | undefined {
  return findByIdAndName(list, idOrName, undefined) ?? findByIdAndName(list, undefined, idOrName);
}
