import { BlockError } from '../../errors.js';
import type { InternalSnapshotInfo, InternalSnapshots, NewSnapshot } from '../../node/types.js';
import { applySnapshot } from './snapshot-apply.js';
import type { SnapshotContext } from './snapshot-context.js';
import { createSnapshot } from './snapshot-create.js';
import { deleteSnapshot } from './snapshot-delete.js';
import type { Qcow2Snapshot } from './snapshots.js';

/** Longest name QEMU keeps (QEMUSnapshotInfo.name is 256 bytes with its NUL): longer ones are cut, as qemu-img and QMP do. */
const MAX_NAME_BYTES = 255;

function info(s: Qcow2Snapshot): InternalSnapshotInfo {
  return { id: s.id, name: s.name, size: s.size, date: { ...s.date }, vmClockNs: s.vmClockNs, vmStateSize: s.vmStateSize, icount: s.icount };
}

/** `name` cut to at most 255 bytes of UTF-8, never inside a character. */
function cutName(name: string): string {
  const b = Buffer.from(name);
  if (b.length <= MAX_NAME_BYTES) return name;
  let end = MAX_NAME_BYTES;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--;
  return b.subarray(0, end).toString();
}

/** What a qcow2 node needs to change its snapshots; `drained` is absent on a read-only node. */
export interface SnapshotHookSource {
  /** The snapshot table, kept current (info lists it). */
  snapshots: Qcow2Snapshot[];
  context: SnapshotContext | undefined;
  drained: (<T>(fn: () => Promise<T>) => Promise<T>) | undefined;
  /** Why snapshots cannot change here (external data file, an open snapshot), if they cannot. */
  refusal: BlockError | undefined;
  /** Called after every change (freed clusters may be reused: caches keyed by host offset go). */
  changed: () => void;
  nodeName: string;
}

/** The InternalSnapshots of a qcow2 node. */
export function qcow2SnapshotHooks(src: SnapshotHookSource): InternalSnapshots {
  const run = async <T>(fn: (c: SnapshotContext) => Promise<T>): Promise<T> => {
    if (src.refusal) throw src.refusal;
    if (!src.drained || !src.context) throw new BlockError('EROFS', `qcow2: node ${src.nodeName} is read-only`, { node: src.nodeName });
    const c = src.context;
    try {
      return await src.drained(() => fn(c));
    } finally {
      src.changed();
    }
  };
  return {
    list: () => src.snapshots.map(info),
    create: (req: NewSnapshot) =>
      run(async (c) => {
        const ms = Date.now();
        return info(await createSnapshot(c, { ...req, name: cutName(req.name) }, { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 }));
      }),
    delete: (id, name) => run(async (c) => info(await deleteSnapshot(c, id, name))),
    apply: (idOrName) => run((c) => applySnapshot(c, idOrName)),
  };
}
