import { createImage } from './create.js';
import { BlockError } from '../errors.js';
import { BlockLayer } from '../layer.js';
import { resolveName } from '../drivers/qcow2/backing.js';
import type { BlockNode } from '../node/node.js';

/** Options of {@link commitImage}. */
export interface CommitOptions {
  /** Leave the overlay as it is after committing (qemu-img commit -d); by default it is emptied. */
  keep?: boolean;
  /** Called after each piece with the bytes of the overlay walked so far and its size. */
  onProgress?: (done: number, total: number) => void;
  /** Stops between pieces; what was written to the backing file stays (as with qemu-img commit). */
  signal?: AbortSignal;
  /** The layer the images open in (its clock, its drivers); a private one, closed afterwards, by default. */
  layer?: BlockLayer;
}

/** What {@link commitImage} did. */
export interface CommitResult {
  /** Path of the backing file the data went into. */
  backingFile: string;
  /** Guest bytes copied or zeroed in the backing file. */
  bytes: number;
  /** The overlay was emptied (replaced by an empty overlay of the same backing file and options). */
  emptied: boolean;
}

const PIECE = 4 * 1024 * 1024;

/**
 * `qemu-img commit OVERLAY`: writes everything the qcow2 overlay holds into its backing file
 * (which must be a file, raw or qcow2), flushes it, then empties the overlay, so the chain reads
 * the same as before. The overlay is replaced atomically by an empty one only after the backing
 * file is durable: a crash at any point leaves a chain that reads the same.
 */
export async function commitImage(overlay: string, options: CommitOptions = {}): Promise<CommitResult> {
  const layer = options.layer ?? new BlockLayer();
  try {
    // The header alone (backing: null): the backing file is opened once, read-write, so a user
    // of it is refused for the write this needs, not for a read first.
    const probe = await layer.openNode({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: overlay }, backing: null });
    const info = probe.info();
    await probe.unref();
    if (typeof info.backingFile !== 'string') {
      throw new BlockError('EINVAL', `'${overlay}' has no backing file to commit into`, { path: overlay, field: 'backing_file' });
    }
    const loc = resolveName({ kind: 'file', name: overlay }, info.backingFile, 'backing file', probe.name);
    if (loc.kind !== 'file') {
      throw new BlockError('ENOTSUP', `'${overlay}' has the backing '${loc.name}', not a file: commit writes into files only`, { path: overlay, field: 'backing_file' });
    }
    const backingFile = loc.name;
    // A header without a backing format: probed as the base opens (driver 'auto').
    const backingDriver = typeof info.backingFormat === 'string' ? info.backingFormat : 'auto';
    if (backingDriver !== 'raw' && backingDriver !== 'qcow2' && backingDriver !== 'auto') {
      throw new BlockError('ENOTSUP', `'${overlay}': backing format '${backingDriver}' is not supported (qcow2 or raw)`, { path: overlay, field: 'backing_fmt' });
    }
    if (info.dataFile !== undefined) {
      throw new BlockError('ENOTSUP', `'${overlay}' has an external data file: commit of such overlays is not supported`, { path: overlay, field: 'data_file' });
    }
    if (!options.keep && Array.isArray(info.snapshots) && info.snapshots.length > 0) {
      throw new BlockError('ENOTSUP', `'${overlay}' has internal snapshots: emptying it would drop them; commit with keep (-d)`, { path: overlay, field: 'snapshots' });
    }
    const base = await layer.openNode({ driver: backingDriver, file: { driver: 'file', filename: backingFile } });
    let top: BlockNode | undefined;
    let bytes = 0;
    try {
      top = await layer.openNode({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: overlay }, backing: base });
      if (top.length > base.length) {
        throw new BlockError('ENOTSUP', `'${overlay}' (${top.length} bytes) is larger than its backing file '${backingFile}' (${base.length} bytes): growing the backing file is not supported`, {
          path: overlay,
        });
      }
      const buf = new Uint8Array(PIECE);
      for (let pos = 0; pos < top.length; ) {
        options.signal?.throwIfAborted();
        const s = await top.blockStatus(pos, Math.min(PIECE, top.length - pos));
        if (s.allocated && s.depth === 0) {
          if (s.zero) await base.writeZeroes(pos, s.length);
          else {
            const part = buf.subarray(0, s.length);
            await top.read(pos, part);
            await base.write(pos, part);
          }
          bytes += s.length;
        }
        pos += s.length;
        options.onProgress?.(pos, top.length);
      }
      await base.flush();
    } finally {
      await top?.unref();
      await base.unref();
    }
    if (options.keep) return { backingFile, bytes, emptied: false };
    await replaceWithEmptyOverlay(overlay, info);
    return { backingFile, bytes, emptied: true };
  } finally {
    // Every node opened here was released above; only a private layer is closed.
    if (options.layer === undefined) await layer.close();
  }
}

/**
 * Replaces `overlay` by an empty qcow2 with the same size, backing file (as written in its header)
 * and format options; createImage writes it under a temporary name and renames it over the old one.
 */
async function replaceWithEmptyOverlay(overlay: string, info: Record<string, unknown>): Promise<void> {
  await createImage(overlay, {
    format: 'qcow2',
    size: info.virtualSize as number,
    backing: info.backingFile as string,
    ...(info.backingFormat === 'raw' || info.backingFormat === 'qcow2' ? { backingFormat: info.backingFormat } : {}),
    clusterSize: info.clusterSize as number,
    compat: info.compat as '0.10' | '1.1',
    extendedL2: info.extendedL2 as boolean,
    compressionType: info.compressionType as 'zlib' | 'zstd',
    lazyRefcounts: info.lazyRefcounts as boolean,
    refcountBits: info.refcountBits as number,
  });
}
