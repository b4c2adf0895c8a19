import type { DriveOptions } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import { canceled, type InputOptions, openInput } from './open-input.js';

/** One range of `qemu-img map --output=json`, keys in its order. */
export interface ImageMapEntry {
  /** Guest offset of the range. */
  start: number;
  /** Length of the range in bytes. */
  length: number;
  /** Which image of the backing chain answers for it (0: the top). */
  depth: number;
  /** Allocated in some image of the chain. */
  present: boolean;
  /** Reads as zeros. */
  zero: boolean;
  /** Holds data (not a hole, not a zero cluster). */
  data: boolean;
  /** Where the range lies in the file holding it, when that is known (absent for compressed clusters and holes). */
  offset?: number;
}

/** Options of {@link imageMap}. */
export type ImageMapOptions = InputOptions;

/** The map with the file that holds each depth's data, as qemu-img's human table names them. */
export interface ImageMapDetail {
  entries: ImageMapEntry[];
  /** `files[depth]`: the file holding the data of the image `depth` layers down (its data file, or its own file). */
  files: string[];
}

/** The file holding the data of the image `depth` layers down the chain (its data file, or its own file), as qemu-img map names it. */
function fileAtDepth(top: BlockNode, depth: number): string {
  let node: BlockNode | undefined = top;
  for (let i = 0; i < depth && node; i++) node = node.child('backing');
  const holder = node?.child('data-file') ?? node?.child('file') ?? node;
  if (holder === undefined) return '';
  if (holder.driver.name === 'http') return holder.info().url as string;
  return (holder.options.filename as string | undefined) ?? '';
}

/** The allocation map of an image's guest view, with the file of each depth (for qemu-img map's human table). */
export async function mapImageDetail(target: string | DriveOptions, options: ImageMapOptions = {}): Promise<ImageMapDetail> {
  const { drive, close } = await openInput(target, options, 'map');
  try {
    const entries: ImageMapEntry[] = [];
    let deepest = 0;
    for await (const e of drive.blockStatusExtents(0, drive.length, { signal: options.signal })) {
      const o: ImageMapEntry = { start: e.offset, length: e.length, depth: e.depth, present: e.allocated, zero: e.zero, data: e.data };
      if (e.hostOffset !== undefined) o.offset = e.hostOffset;
      entries.push(o);
      if (e.depth > deepest) deepest = e.depth;
    }
    if (options.signal?.aborted) throw canceled('map', options.signal);
    const files = Array.from({ length: deepest + 1 }, (_, d) => fileAtDepth(drive.node, d));
    return { entries, files };
  } finally {
    await close();
  }
}

/** What `qemu-img map --output=json` prints for an image (path, `nbd://`, `http(s)://`, `rbd:` or drive options): its ranges in guest order. */
export async function imageMap(target: string | DriveOptions, options: ImageMapOptions = {}): Promise<ImageMapEntry[]> {
  return (await mapImageDetail(target, options)).entries;
}
