import { BlockError } from '../errors.js';
import { imageOptions } from '../image-options.js';
import { BlockLayer, type DriveOptions } from '../layer.js';
import type { PreallocMode } from '../node/types.js';
import { parseSize } from '../options/size.js';

/** qemu-img's preallocation modes, as `--preallocation` spells them. */
export const PREALLOC_MODES: readonly PreallocMode[] = ['off', 'metadata', 'falloc', 'full'];

/** Options of {@link resizeImage}. */
export interface ResizeOptions {
  /** The image format, used as given (qemu-img's `-f`); probed when absent. */
  format?: string;
  /** Allow a smaller size (qemu-img --shrink): what lies past the new end is lost. */
  shrink?: boolean;
  /** How the grown part is allocated (qemu-img --preallocation); default `off`. */
  preallocation?: PreallocMode;
  /** Checked before the image opens and before it changes; a resize under way completes. */
  signal?: AbortSignal;
  /** The layer the image opens in; a private one, closed afterwards, by default. */
  layer?: BlockLayer;
}

/** What {@link resizeImage} did. */
export interface ResizeResult {
  oldSize: number;
  newSize: number;
}

const SIZE_SYNTAX = "Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.";

/**
 * The size `spec` asks for an image of `current` bytes, as qemu-img resize reads it: a byte
 * count or a size with a suffix (`10G`), or relative to the current size (`+1G`, `-512M`).
 * EINVAL (field `size`) with qemu-img's words for what it refuses: a size it cannot read, or a
 * result that is not positive.
 */
export function resizeTarget(current: number, spec: number | string): number {
  let sign = 0;
  let text = spec;
  if (typeof text === 'string' && (text.startsWith('+') || text.startsWith('-'))) {
    sign = text.startsWith('+') ? 1 : -1;
    text = text.slice(1);
  }
  const n = parseSize(text);
  if (!Number.isInteger(n) || n < 0 || n >= 2 ** 64) throw new BlockError('EINVAL', SIZE_SYNTAX, { field: 'size' });
  if (!Number.isSafeInteger(n)) throw new BlockError('EFBIG', `size: ${text} is beyond 2^53 bytes`, { field: 'size' });
  const size = sign === 0 ? n : current + sign * n;
  if (size <= 0) throw new BlockError('EINVAL', 'New image size must be positive', { field: 'size' });
  if (!Number.isSafeInteger(size)) throw new BlockError('EFBIG', `size: ${current} + ${n} is beyond 2^53 bytes`, { field: 'size' });
  return size;
}

/** A preallocation mode from its name, or qemu-img's error. */
export function preallocMode(name: string): PreallocMode {
  if (!(PREALLOC_MODES as readonly string[]).includes(name)) throw new BlockError('EINVAL', `Invalid preallocation mode '${name}'`, { field: 'preallocation' });
  return name as PreallocMode;
}

/** An image's tree (read-only, as imageOptions makes it) opened read-write, its file too. */
function writable(tree: DriveOptions): DriveOptions {
  const out: Record<string, unknown> = { ...tree, readOnly: false };
  if (out.file !== null && typeof out.file === 'object') out.file = { ...(out.file as Record<string, unknown>), readOnly: false };
  return out as DriveOptions;
}

/**
 * `qemu-img resize IMAGE [+|-]SIZE`: changes the virtual size of an image (a path, or drive
 * options), opened read-write. Shrinking needs `shrink` (qemu-img's words otherwise);
 * preallocation only grows. Resolves with the sizes before and after.
 */
export async function resizeImage(image: string | DriveOptions, size: number | string, options: ResizeOptions = {}): Promise<ResizeResult> {
  const prealloc = options.preallocation === undefined ? 'off' : preallocMode(options.preallocation);
  options.signal?.throwIfAborted();
  const layer = options.layer ?? new BlockLayer();
  try {
    const tree = typeof image === 'string' ? writable(imageOptions(image, { format: options.format }) as DriveOptions) : image;
    const drive = await layer.openDrive(tree);
    try {
      const oldSize = drive.length;
      const newSize = resizeTarget(oldSize, size);
      if (prealloc !== 'off' && newSize < oldSize) throw new BlockError('EINVAL', 'Preallocation can only be used for growing images', { field: 'preallocation' });
      if (newSize < oldSize && !options.shrink) {
        throw new BlockError(
          'EINVAL',
          "Use the --shrink option to perform a shrink operation.\nwarning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.",
          { field: 'size' },
        );
      }
      options.signal?.throwIfAborted();
      await drive.resize(newSize, { shrink: options.shrink === true, prealloc });
      return { oldSize, newSize: drive.length };
    } finally {
      await drive.close();
    }
  } finally {
    if (!options.layer) await layer.close();
  }
}
