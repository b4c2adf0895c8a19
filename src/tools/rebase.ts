import { protocolOptions, resolveName } from '../drivers/qcow2/backing.js';
import { BlockError, isBlockError } from '../errors.js';
import { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import { forEachChunk, sameBytes, sectorRun } from './chunk-pool.js';
import { canceled } from './open-input.js';

/** Options of {@link rebaseImage}. */
export interface RebaseOptions {
  /** The image's format (`-f`); probed when omitted. Only qcow2 images name a backing file. */
  format?: string;
  /** The new backing file's format (`-F`): required with a new backing file, as qemu-img 7.2 requires it. */
  backingFormat?: string;
  /** Only change the header (qemu-img rebase -u): no backing file is opened, no data copied. */
  unsafe?: boolean;
  /** Open the new backing file sharing everything (`-U`): it may be in use elsewhere (the image, written, cannot share). */
  forceShare?: boolean;
  /** Called after each piece with the bytes of the image walked so far and its size. */
  onProgress?: (done: number, total: number) => void;
  /** Stops between pieces, before the header changes: what was copied stays (the image reads the same). */
  signal?: AbortSignal;
  /** The layer the images open in (its clock, its drivers); a private one, closed afterwards, by default. */
  layer?: BlockLayer;
}

/** What {@link rebaseImage} did. */
export interface RebaseResult {
  /** The backing file name now in the header (as given), or null for none. */
  backingFile: string | null;
  /** The backing format now in the header. */
  backingFormat?: string;
  /** Bytes written into the image so that its guest view stays the same (0 in unsafe mode). */
  bytes: number;
}

/** qemu-img's buffer: 2 MiB per read. */
const PIECE = 2 * 1024 * 1024;
const PARALLEL = 4;

/**
 * `qemu-img rebase -b BACKING [-F FMT] [-u] IMAGE`: names `backing` (null or '': none) as the
 * image's backing file. Safe mode (the default) first writes into the image every range it does
 * not hold itself where the old backing chain and the new backing file read differently (the
 * old chain's bytes), flushes, and only then changes the header, so the guest sees the same disk
 * before, after, and at any crash in between. `unsafe` changes the header only. A relative
 * `backing` is stored as given and opened from the image's directory, as qemu-img does.
 */
export async function rebaseImage(path: string, backing: string | null, options: RebaseOptions = {}): Promise<RebaseResult> {
  const name = backing === null || backing === '' ? null : backing;
  const format = name === null ? undefined : options.backingFormat;
  const layer = options.layer ?? new BlockLayer();
  try {
    if (name !== null && format === undefined) {
      throw new BlockError('EINVAL', `Could not change the backing file to '${name}': backing format must be specified (-F)`, { field: 'backingFormat', path });
    }
    if (format !== undefined && !(layer.drivers.has(format) && layer.drivers.get(format).capabilities.kind === 'format')) {
      throw new BlockError('EINVAL', `Invalid format name: '${format}'`, { field: 'backingFormat' });
    }
    if (options.signal?.aborted) throw canceled('rebase', options.signal);
    const file = { driver: 'file', filename: path };
    // Unsafe: the old backing chain is not opened (it may be gone: that is why one rebases unsafely).
    const image = await layer.openNode({ driver: options.format ?? 'auto', file, ...(options.unsafe ? { backing: null } : {}) });
    try {
      if (!image.driver.capabilities.supportsBacking) {
        throw new BlockError('ENOTSUP', `Could not change the backing file to '${name ?? ''}': the ${image.driver.name} format does not support backing files`, {
          path,
          field: 'backing_file',
        });
      }
      let bytes = 0;
      if (!options.unsafe) {
        const next = name === null ? undefined : await openNewBacking(layer, path, name, format!, options.forceShare);
        try {
          bytes = await copyDiffering(image, image.child('backing'), next, options);
        } finally {
          await next?.unref();
        }
        await image.flush();
      }
      await image.changeBackingFile(name, format);
      return { backingFile: name, ...(format !== undefined ? { backingFormat: format } : {}), bytes };
    } finally {
      await image.unref();
    }
  } finally {
    if (options.layer === undefined) await layer.close();
  }
}

/** The new backing file, read-only, relative names from the image's directory; its own chain opens from its header. */
async function openNewBacking(layer: BlockLayer, image: string, name: string, format: string, forceShare: boolean | undefined): Promise<BlockNode> {
  const loc = resolveName({ kind: 'file', name: image }, name, 'backing file', 'rebase');
  try {
    return await layer.openNode({ driver: format, readOnly: true, file: protocolOptions(loc, true, forceShare === true) });
  } catch (e) {
    const code = isBlockError(e) ? e.code : 'EIO';
    throw new BlockError(code, `Could not open new backing file '${name}': ${(e as Error).message}`, { path: loc.name, field: 'backing_file', cause: e });
  }
}

/**
 * Writes into `image`, where it does not hold the data itself, the old chain's bytes wherever
 * they differ from the new backing file's (a node or none: zeros), by 512-byte sectors as
 * qemu-img does. Both reading as zeros (block status) is skipped unread. Returns the bytes written.
 */
async function copyDiffering(image: BlockNode, old: BlockNode | undefined, next: BlockNode | undefined, options: RebaseOptions): Promise<number> {
  const size = image.length;
  const buffers: [Uint8Array, Uint8Array][] = [];
  const buffersOf = (slot: number) => (buffers[slot] ??= [new Uint8Array(Math.min(PIECE, size)), new Uint8Array(Math.min(PIECE, size))]);
  let bytes = 0;
  let done = 0;
  // Zeros past a backing node's end, as the image reads them.
  const zeroUpTo = async (node: BlockNode | undefined, pos: number, end: number): Promise<{ zero: boolean; length: number }> => {
    if (node === undefined || pos >= node.length) return { zero: true, length: end - pos };
    const s = await node.blockStatus(pos, Math.min(end, node.length) - pos);
    return { zero: s.zero, length: s.length };
  };
  const readInto = async (node: BlockNode | undefined, pos: number, part: Uint8Array) => {
    const n = node === undefined ? 0 : Math.max(0, Math.min(part.length, node.length - pos));
    if (n > 0) await node!.read(pos, part.subarray(0, n));
    part.fill(0, n);
  };
  const piece = async (offset: number, length: number, slot: number) => {
    const [bufOld, bufNew] = buffersOf(slot);
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const own = await image.blockStatus(pos, end - pos);
      if (own.allocated && own.depth === 0) {
        pos += own.length;
        continue;
      }
      const ownEnd = pos + own.length;
      const a = await zeroUpTo(old, pos, ownEnd);
      const b = await zeroUpTo(next, pos, ownEnd);
      const n = Math.min(a.length, b.length);
      if (!(a.zero && b.zero)) {
        const partOld = bufOld.subarray(0, n);
        const partNew = bufNew.subarray(0, n);
        await Promise.all([readInto(old, pos, partOld), readInto(next, pos, partNew)]);
        if (!sameBytes(partOld, partNew)) {
          for (let at = 0; at < n; ) {
            at += sectorRun(partOld, partNew, at, true);
            const run = sectorRun(partOld, partNew, at, false);
            if (run > 0) {
              await image.write(pos + at, partOld.subarray(at, at + run));
              bytes += run;
            }
            at += run;
          }
        }
      }
      pos += n;
    }
  };
  await forEachChunk(
    size,
    {
      chunk: PIECE,
      parallel: PARALLEL,
      signal: options.signal,
      canceled: () => canceled('rebase', options.signal!),
      onPiece: (length) => {
        done += length;
        options.onProgress?.(done, size);
      },
    },
    piece,
  );
  return bytes;
}
