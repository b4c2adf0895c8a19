/**
 * `qemu-img bitmap`: changes a persistent dirty bitmap of an image, several operations in one
 * call, in order. As qemu-img does, each operation is the QMP command of the same name
 * (qmp/bitmap-commands.ts) on the image's node, so checks and errors are QEMU's; the first that
 * fails stops the rest, and what went before stays (the image closes, storing its bitmaps).
 */
import { BlockError, isBlockError } from '../errors.js';
import { imageOptions } from '../image-options.js';
import { BlockLayer, type DriveOptions } from '../layer.js';
import {
  commitNow,
  type PreparedAction,
  prepareBitmapAdd,
  prepareBitmapClear,
  prepareBitmapMerge,
  prepareBitmapRecording,
  prepareBitmapRemove,
} from '../qmp/bitmap-commands.js';

/** One change to the bitmap, as qemu-img bitmap's `--add`, `--remove`, `--clear`, `--enable`, `--disable`, `--merge SOURCE`. */
export type BitmapOperation =
  | { op: 'add' | 'remove' | 'clear' | 'enable' | 'disable' }
  | {
      op: 'merge';
      /** The bitmap whose dirty bits are added: in the image, or in `sourceFile` when given. */
      source: string;
    };

/** Options of {@link bitmapImage}. */
export interface BitmapImageOptions {
  /** The image format, used as given (qemu-img's `-f`); probed when absent. */
  format?: string;
  /** Granularity of added bitmaps in bytes (`-g`; 0 or absent: QEMU's default for the image). */
  granularity?: number;
  /** Another image holding the `merge` sources (`-b`), opened read-only. */
  sourceFile?: string;
  /** The format of `sourceFile` (`-F`); probed when absent. */
  sourceFormat?: string;
  /** The layer the images open in; a private one, closed afterwards, by default. */
  layer?: BlockLayer;
}

/** Drive ids of the image and of the merge source inside the layer (the QMP `node` the operations name). */
const IMAGE = 'bitmap-image';
const SOURCE = 'bitmap-source';

/** A target's tree (read-only, as imageOptions makes it) opened read-write, its file too. */
function readWrite(tree: DriveOptions): DriveOptions {
  const out: Record<string, unknown> = { ...tree, readOnly: false };
  if (out.file !== null && typeof out.file === 'object') out.file = { ...(out.file as Record<string, unknown>), readOnly: false };
  return out as DriveOptions;
}

/**
 * Applies `operations` in order to the persistent bitmap `bitmap` of `image` (a path, or drive
 * options), opened read-write: `add` makes it persistent and recording (with `granularity`),
 * `merge` adds the bits of another bitmap of the image or of `sourceFile`. Rejects with a
 * BlockError "Operation OP on bitmap NAME failed: …" (QEMU's words) at the first that fails;
 * those before it are kept.
 */
export async function bitmapImage(image: string | DriveOptions, bitmap: string, operations: readonly BitmapOperation[], options: BitmapImageOptions = {}): Promise<void> {
  if (operations.length === 0) throw new BlockError('EINVAL', 'Need at least one of --add, --remove, --clear, --enable, --disable, or --merge', { field: 'operations' });
  const hasAdd = operations.some((o) => o.op === 'add');
  const hasMerge = operations.some((o) => o.op === 'merge');
  if (options.granularity !== undefined && options.granularity !== 0 && !hasAdd) throw new BlockError('EINVAL', 'granularity only supported with --add', { field: 'granularity' });
  if (options.sourceFormat !== undefined && options.sourceFile === undefined) throw new BlockError('EINVAL', '-F only supported with -b', { field: 'sourceFormat' });
  if (options.sourceFile !== undefined && !hasMerge) throw new BlockError('EINVAL', 'Merge bitmap source file only supported with --merge', { field: 'sourceFile' });
  const granularity = options.granularity;
  if (granularity !== undefined && (!Number.isSafeInteger(granularity) || granularity < 0)) {
    throw new BlockError('EINVAL', `granularity: ${String(granularity)} is not a byte count`, { field: 'granularity' });
  }
  const layer = options.layer ?? new BlockLayer();
  try {
    const tree = typeof image === 'string' ? readWrite(imageOptions(image, { format: options.format }) as DriveOptions) : image;
    await layer.openDrive({ ...tree, id: IMAGE });
    if (options.sourceFile !== undefined) {
      await layer.openDrive({ ...(imageOptions(options.sourceFile, { format: options.sourceFormat }) as DriveOptions), id: SOURCE });
    }
    for (const operation of operations) {
      try {
        await commitNow(prepare(layer, bitmap, operation, granularity, options.sourceFile !== undefined));
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        const cause = (e as { cause?: unknown }).cause;
        throw new BlockError(isBlockError(cause) ? cause.code : 'EINVAL', `Operation ${operation.op} on bitmap ${bitmap} failed: ${why}`, { field: 'bitmap', cause: e });
      }
    }
  } finally {
    // Closing stores the bitmaps in the image, those changed before a failure too (as qemu-img).
    if (options.layer === undefined) await layer.close();
    else {
      await layer.drive(SOURCE)?.close();
      await layer.drive(IMAGE)?.close();
    }
  }
}

function prepare(layer: BlockLayer, name: string, operation: BitmapOperation, granularity: number | undefined, fromSource: boolean): PreparedAction | Promise<PreparedAction> {
  const ref = { node: IMAGE, name };
  switch (operation.op) {
    case 'add':
      // qemu-img passes -g as QMP's uint32: 0 means the default, larger values wrap.
      return prepareBitmapAdd(layer, { ...ref, persistent: true, ...(granularity ? { granularity: granularity % 2 ** 32 } : {}) });
    case 'remove':
      return prepareBitmapRemove(layer, ref);
    case 'clear':
      return prepareBitmapClear(layer, ref);
    case 'enable':
      return prepareBitmapRecording(layer, ref, true);
    case 'disable':
      return prepareBitmapRecording(layer, ref, false);
    case 'merge':
      return prepareBitmapMerge(layer, { node: IMAGE, target: name, bitmaps: [fromSource ? { node: SOURCE, name: operation.source } : operation.source] });
  }
}
