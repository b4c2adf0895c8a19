import type { Drive } from '../drive.js';
import { BlockError } from '../errors.js';
import { imageOptions } from '../image-options.js';
import { BlockLayer, type DriveOptions } from '../layer.js';

/** How the inspecting tools (info, map, convert's input) open their image. */
export interface InputOptions {
  /** The image format (raw, qcow2), used as given; probed when omitted (qemu-img's `-f`). */
  format?: string;
  /** A qcow2 internal snapshot (id or name) to read instead of the active image (`--snapshot`). */
  snapshot?: string;
  /** Read-only, sharing everything: read an image another process holds read-write (qemu-img's `-U`). */
  forceShare?: boolean;
  /** The layer the image opens in (its clock, its drivers); a private one, closed afterwards, by default. */
  layer?: BlockLayer;
  /** Stops the work: the promise rejects with ECANCELED whose `cause` is the signal's reason. */
  signal?: AbortSignal;
}

/** An image as a tool reads it, and how to let it go. */
export interface OpenedInput {
  readonly drive: Drive;
  readonly layer: BlockLayer;
  /** Closes the drive, and the layer when the tool made it. */
  close(): Promise<void>;
}

/**
 * The option tree with QEMU's force-share on each file node in it (the image's file; the backing
 * chain and data file the qcow2 driver opens inherit it). The tree is read-only, as targetOptions makes it.
 */
export function withForceShare<T extends Record<string, unknown>>(tree: T, on: boolean | undefined): T {
  if (!on) return tree;
  const walk = (o: Record<string, unknown>): Record<string, unknown> => {
    const out: Record<string, unknown> = { ...o };
    if (o.driver === 'file') out.forceShare = true;
    for (const [k, v] of Object.entries(o)) if (v !== null && typeof v === 'object' && !Array.isArray(v) && 'driver' in v) out[k] = walk(v as Record<string, unknown>);
    return out;
  };
  return walk(tree) as T;
}

/** The error a tool stopped by its caller's signal rejects with: ECANCELED, the reason as `cause`. */
export function canceled(what: string, signal: AbortSignal, detail = ''): BlockError {
  return new BlockError('ECANCELED', `${what}: aborted${detail}`, { cause: signal.reason });
}

/**
 * Opens `input` read-only: a target string (path, `nbd://`, `http(s)://`, `rbd:`; format given or
 * probed) or drive options as the caller builds them. With no `layer` a private one is made and
 * closed by `close()` (or here, on failure).
 */
export async function openInput(input: string | DriveOptions, options: InputOptions, what: string): Promise<OpenedInput> {
  const { signal } = options;
  if (signal?.aborted) throw canceled(what, signal);
  const own = options.layer === undefined;
  const layer = options.layer ?? new BlockLayer();
  try {
    // A target's format is probed as it opens ('auto'), over the node that stays open.
    const tree = typeof input === 'string' ? (imageOptions(input, { format: options.format, snapshot: options.snapshot }) as DriveOptions) : input;
    const drive = await layer.openDrive(withForceShare(tree, options.forceShare));
    const close = async () => {
      if (own) await layer.close();
      else await drive.close();
    };
    if (signal?.aborted) {
      await close();
      throw canceled(what, signal);
    }
    return { drive, layer, close };
  } catch (e) {
    if (own) await layer.close();
    throw e;
  }
}
