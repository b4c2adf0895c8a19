import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import { repairDirtyImage } from './dirty-repair.js';
import { parseHeader, type Qcow2Header } from './header.js';
import * as L from './limits.js';
import { Refcounts } from './refcounts.js';
import { checkSnapshotL1, type Qcow2Snapshot } from './snapshots.js';

/** Reads exactly `target.length` bytes at `offset` of `node`, zeros past its end (a file may end inside its last cluster). */
export async function readClamped(node: Pick<BlockNode, 'length' | 'read'>, offset: number, target: Uint8Array): Promise<void> {
  const size = node.length;
  const n = Math.max(0, Math.min(target.length, size - offset));
  if (n > 0) await node.read(offset, target.subarray(0, n));
  if (n < target.length) target.fill(0, n);
}

/** Metadata reads from the image file: `length` new bytes at `offset`, zeros past its end. */
export type MetadataReader = (offset: number, length: number) => Promise<Uint8Array>;

export function metadataReader(file: BlockNode): MetadataReader {
  return async (offset, length) => {
    const b = new Uint8Array(length);
    await readClamped(file, offset, b);
    return b;
  };
}

/** Why an image cannot be written here, or undefined (checked when it is opened read-write). */
function writeRefusal(h: Qcow2Header): { message: string; field: string } | undefined {
  if (h.incompatible & L.INCOMPAT_CORRUPT) return { message: 'the image is marked corrupt (repair it with qemu-img check -r all)', field: 'incompatible_features' };
  return undefined;
}

/** What the first read of an image asks for: the header and its extensions of a cluster up to this size, at once. */
const FIRST_READ = 64 * 1024;

/**
 * The header cluster (the header and its extensions live in the first cluster): 64 KiB first and
 * the rest only for larger clusters, not 2 MiB at once, which over http would fetch up to 2 MiB
 * of a base for a header of a few hundred bytes. A cluster_bits out of range is parseHeader's to refuse.
 */
async function readHeaderCluster(read: MetadataReader, fileLength: number): Promise<Uint8Array> {
  const first = await read(0, Math.min(fileLength, FIRST_READ));
  const clusterBits = first.length >= 24 ? new DataView(first.buffer, first.byteOffset, first.byteLength).getUint32(20) : 0;
  if (clusterBits > L.MAX_CLUSTER_BITS || 2 ** clusterBits <= first.length || fileLength <= first.length) return first;
  return read(0, Math.min(fileLength, 2 ** clusterBits));
}

/**
 * Step 1: reads and validates the header. Read-write, also refuses what cannot be written here
 * and repairs a dirty image (lazy refcounts, then a crash) as QEMU does, reading the header again.
 */
export async function openHeader(file: BlockNode, writable: boolean, nodeName: string): Promise<Qcow2Header> {
  const read = metadataReader(file);
  const readHeader = async () => parseHeader(await readHeaderCluster(read, file.length), file.length);
  const h = await readHeader();
  if (!writable) return h;
  const refusal = writeRefusal(h);
  if (refusal) throw new BlockError('ENOTSUP', `qcow2: ${refusal.message}; open it read-only`, { field: refusal.field, node: nodeName });
  if (!(h.incompatible & L.INCOMPAT_DIRTY)) return h;
  await repairDirtyImage(file, nodeName);
  return readHeader();
}

/** Step 3: the L1 table of the current state, or of the internal snapshot `snapshot` (id or name). */
export async function loadL1(
  file: BlockNode,
  h: Qcow2Header,
  snapshots: Qcow2Snapshot[],
  snapshot: string | undefined,
  nodeName: string,
): Promise<{ l1: Buffer; l1Offset: number }> {
  let l1Offset = h.l1TableOffset;
  let l1Size = h.l1Size;
  if (snapshot !== undefined) {
    const s = snapshots.find((x) => x.id === snapshot) ?? snapshots.find((x) => x.name === snapshot);
    if (!s) {
      throw new BlockError('ENOENT', `snapshot: no snapshot with id or name '${snapshot}' (have: ${snapshots.map((x) => x.name || x.id).join(', ') || 'none'})`, {
        field: 'snapshot',
        node: nodeName,
      });
    }
    checkSnapshotL1(s, h);
    l1Offset = s.l1TableOffset;
    l1Size = s.l1Size;
  }
  const l1 = Buffer.from(l1Size > 0 ? await metadataReader(file)(l1Offset, l1Size * 8) : new Uint8Array(0));
  return { l1, l1Offset };
}

/** Step 4 (read-write only): the refcount table and a cache of refcount blocks; a moved table is recorded in the header. */
export async function openRefcounts(file: BlockNode, h: Qcow2Header, cacheSize: number): Promise<Refcounts> {
  const read = metadataReader(file);
  const metadataIO = {
    read,
    write: (offset: number, data: Uint8Array) => file.write(offset, data, true),
    sync: () => file.flush(),
  };
  return new Refcounts(
    metadataIO,
    h.clusterBits,
    h.refcountOrder,
    h.refcountTableOffset,
    h.refcountTableClusters,
    await read(h.refcountTableOffset, h.refcountTableClusters * h.clusterSize),
    file.length,
    cacheSize,
    async (offset, clusters) => {
      // The new table is on disk and synced: point the header at it.
      const b = Buffer.alloc(12);
      b.writeUInt32BE(Math.floor(offset / 2 ** 32), 0);
      b.writeUInt32BE(offset >>> 0, 4);
      b.writeUInt32BE(clusters, 8);
      await file.write(48, b);
      await file.flush();
      h.refcountTableOffset = offset;
      h.refcountTableClusters = clusters;
    },
  );
}
