/**
 * `qemu-img snapshot`: lists, creates, applies or deletes the internal snapshots of an image
 * (qcow2 keeps them; other formats have none to list and refuse the rest), with qemu-img 7.2's
 * lookups and error texts.
 */
import { BlockError, isBlockError } from '../errors.js';
import { imageOptions } from '../image-options.js';
import { BlockLayer, type DriveOptions } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import type { InternalSnapshotInfo } from '../node/types.js';
import { withForceShare } from './open-input.js';

/** What {@link snapshotImage} does: qemu-img snapshot's `-l`, `-c NAME`, `-a NAME`, `-d NAME`. */
export type SnapshotAction = { list: true } | { create: string } | { apply: string } | { delete: string };

/** Options of {@link snapshotImage}. */
export interface SnapshotImageOptions {
  /** The image format, used as given; probed when absent. */
  format?: string;
  /** Open a listed image read-only sharing everything (qemu-img -U), so an image in use can be listed. */
  forceShare?: boolean;
  /** Checked before the image is changed. */
  signal?: AbortSignal;
  /** The layer the image opens in; a private one, closed afterwards, by default. */
  layer?: BlockLayer;
}

/** What {@link snapshotImage} did. */
export interface SnapshotResult {
  /** The image's snapshots after the action, in table order. */
  snapshots: InternalSnapshotInfo[];
  /** The snapshot created, applied or deleted. */
  snapshot?: InternalSnapshotInfo;
}

/** A read-only tree as imageOptions makes it, opened read-write (the file node too). */
function readWrite(tree: DriveOptions): DriveOptions {
  const out: Record<string, unknown> = { ...tree, readOnly: false };
  if (out.file !== null && typeof out.file === 'object') out.file = { ...(out.file as Record<string, unknown>), readOnly: false };
  return out as DriveOptions;
}

/** strerror's words for the codes a snapshot change can end with (qemu-img prints -errno and them). */
const STRERROR: Record<string, [number, string]> = {
  ENOTSUP: [95, 'Operation not supported'],
  EEXIST: [17, 'File exists'],
  EFBIG: [27, 'File too large'],
  ENOSPC: [28, 'No space left on device'],
  EROFS: [30, 'Read-only file system'],
  EIO: [5, 'Input/output error'],
  EINVAL: [22, 'Invalid argument'],
};

/** `e` with qemu-img's words in front, its code kept (and the original as the cause). */
function reworded(e: unknown, message: (inner: string) => string): unknown {
  if (!isBlockError(e)) return e;
  return new BlockError(e.code, message(e.message), { node: e.node, path: e.path, field: e.field, offset: e.offset, cause: e });
}

/**
 * Runs one snapshot action on `image` (a path, or the node options of a drive). `list` opens it
 * read-only; the others read-write. Rejects with qemu-img's texts: "Could not create snapshot
 * 'N': -95 (Operation not supported)", "Could not apply snapshot 'N': Failed to load snapshot:
 * No such file or directory", "Could not delete snapshot 'N': snapshot not found" (delete finds
 * by name only, apply by id then name, as qemu-img 7.2 does).
 */
export async function snapshotImage(image: string | DriveOptions, action: SnapshotAction, options: SnapshotImageOptions = {}): Promise<SnapshotResult> {
  const list = 'list' in action;
  if (options.forceShare && !list) throw new BlockError('EINVAL', 'force-share (-U) needs a read-only open: it goes with list (-l) only', { field: 'forceShare' });
  const layer = options.layer ?? new BlockLayer();
  let node: BlockNode | undefined;
  try {
    let tree = typeof image === 'string' ? (imageOptions(image, { format: options.format }) as DriveOptions) : image;
    if (!list && typeof image === 'string') tree = readWrite(tree);
    tree = withForceShare(tree as Record<string, unknown>, options.forceShare) as DriveOptions;
    node = await layer.openNode(tree);
    const snaps = node.snapshots;
    const all = () => snaps?.list() ?? [];
    options.signal?.throwIfAborted();
    if ('list' in action) return { snapshots: all() };
    if ('create' in action) {
      const name = action.create;
      if (!snaps) {
        const [errno, text] = STRERROR.ENOTSUP;
        throw new BlockError('ENOTSUP', `Could not create snapshot '${name}': -${errno} (${text})`, { field: 'format' });
      }
      const snapshot = await snaps.create({ name }).catch((e: unknown) => {
        // A refcount past refcount_bits: QEMU's update_refcount answers EINVAL.
        const known = isBlockError(e) ? STRERROR[e.field === 'refcount_bits' ? 'EINVAL' : e.code] : undefined;
        throw reworded(e, (m) => `Could not create snapshot '${name}': ${known ? `-${known[0]} (${known[1]})` : m}`);
      });
      return { snapshots: all(), snapshot };
    }
    if ('apply' in action) {
      const name = action.apply;
      if (!snaps) throw new BlockError('ENOTSUP', `Could not apply snapshot '${name}': Block driver does not support snapshots`, { field: 'format' });
      const snapshot = all().find((s) => s.id === name) ?? all().find((s) => s.name === name);
      await snaps.apply(name).catch((e: unknown) => {
        throw reworded(e, (m) => `Could not apply snapshot '${name}': ${m}`);
      });
      return { snapshots: all(), ...(snapshot ? { snapshot } : {}) };
    }
    const name = action.delete;
    const found = all().find((s) => s.name === name);
    if (!snaps || !found) throw new BlockError('ENOENT', `Could not delete snapshot '${name}': snapshot not found`, { field: 'name' });
    const snapshot = await snaps.delete(found.id, found.name).catch((e: unknown) => {
      throw reworded(e, (m) => `Could not delete snapshot '${name}': ${m}`);
    });
    return { snapshots: all(), snapshot };
  } finally {
    await node?.unref();
    if (options.layer === undefined) await layer.close();
  }
}
