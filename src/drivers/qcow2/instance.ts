import { BlockError } from '../../errors.js';
import type { BackingSource, BlockStatus, DriverInstance } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { changeBackingFile } from './backing-change.js';
import { Qcow2BitmapStore } from './bitmap-store.js';
import type { Qcow2BitmapEntry } from './bitmaps.js';
import { compressCluster } from './compressed.js';
import { CompressedReader } from './compressed-reader.js';
import type { Qcow2Header } from './header.js';
import { qcow2Info } from './info.js';
import type { L2Cache } from './l2-cache.js';
import * as L from './limits.js';
import { type ImageOpenOptions, readImage } from './open-image.js';
import { readClamped } from './open-steps.js';
import { MetadataOverlap } from './overlap.js';
import { detectMetadataPreallocation } from './prealloc-detect.js';
import { qcow2SnapshotHooks } from './snapshot-hooks.js';
import type { Refcounts } from './refcounts.js';
import type { Qcow2Snapshot } from './snapshots.js';
import type { ClusterMap } from './tables.js';
import { Qcow2Writer } from './writer.js';
import type { WriterContext } from './writer-context.js';
import { type ResizeTarget, resizeQcow2 } from './resize.js';

/** Everything the open steps gathered: the parts of an open qcow2 node. */
export interface OpenedImage {
  nodeName: string;
  /** The internal snapshot open instead of the current state (read-only). */
  snapshot: string | undefined;
  /** What shaped the in-memory state at open (a reopen reads the image again with it). */
  options: ImageOpenOptions;
  file: BlockNode;
  h: Qcow2Header;
  /** Virtual size (a snapshot is read with the image's current one, as qemu-img convert -l does). */
  size: number;
  l1: Buffer;
  l1Offset: number;
  snapshots: Qcow2Snapshot[];
  /** The bitmap directory as read at open (shadowed entries included). */
  bitmaps: Qcow2BitmapEntry[];
  /** Present when the image is writable. */
  refcounts: Refcounts | undefined;
  l2Cache: L2Cache;
  tables: ClusterMap;
  dataNode: BlockNode | undefined;
  backing: BlockNode | undefined;
}

/** The operations of an open qcow2 node: reads through the cluster map, writes through the writer. */
export function qcow2Instance(o: OpenedImage): DriverInstance {
  const { file, h, refcounts, tables, dataNode, nodeName } = o;
  // Changes at runtime when a stream or commit job drops the nodes in between (replaceBacking).
  let backing: BackingSource | undefined = o.backing;
  const data = dataNode ?? file;
  const compressed = new CompressedReader(file, h, refcounts);

  const readBacking = async (offset: number, target: Uint8Array) => {
    if (!backing) return void target.fill(0);
    await readClamped(backing, offset, target);
  };

  // Host clusters under a read are not reused until it is done (see Refcounts.pin); only a
  // writable image frees clusters.
  const pinnedRead = async (host: number, part: Uint8Array): Promise<void> => {
    const inFile = host + part.length <= data.length;
    if (!refcounts || dataNode) return inFile ? data.read(host, part) : readClamped(data, host, part);
    const pin = refcounts.pin(host, part.length);
    try {
      await (inFile ? data.read(host, part) : readClamped(data, host, part));
    } finally {
      refcounts.unpin(pin);
    }
  };

  // A request that is one run of data clusters contiguous on the host, with its L2 table
  // cached, is one read of the data file, found without an await (tables.dataRunNow).
  const readGuest = (offset: number, buffer: Uint8Array): Promise<void> => {
    const host = tables.dataRunNow(offset, buffer.length);
    return host >= 0 ? pinnedRead(host, buffer) : readGuestParts(offset, buffer);
  };

  const readGuestParts = async (offset: number, buffer: Uint8Array): Promise<void> => {
    // Data reads run in parallel; each gets a handler at once so a failure is never unhandled
    // while later extents are being mapped. After a failure no further read is issued, and
    // the request settles only when every issued read has (QEMU: after all of its parts).
    const pending: Promise<void>[] = [];
    let failed = false;
    let failure: unknown;
    const start = (p: Promise<void>) => {
      p.catch((e) => {
        if (!failed) {
          failed = true;
          failure = e;
        }
      });
      pending.push(p);
    };
    let pos = 0;
    try {
      while (pos < buffer.length && !failed) {
        const m = await tables.map(offset + pos, buffer.length - pos);
        const part = buffer.subarray(pos, pos + m.length);
        if (m.kind === 'data') start(pinnedRead(m.host, part));
        else if (m.kind === 'zero') part.fill(0);
        else if (m.kind === 'unallocated') start(readBacking(offset + pos, part));
        else {
          await compressed.read(m.host, m.compressedSize, offset + pos - m.clusterStart, part);
        }
        pos += m.length;
      }
    } catch (e) {
      // a mapping or decompression failure: still wait for the reads already issued
      if (!failed) {
        failed = true;
        failure = e;
      }
    }
    await Promise.allSettled(pending);
    if (failed) throw failure;
  };

  // Lazy refcounts (compatible bit 0): the dirty bit is on disk while the image is written, so
  // that a crash leaves an image QEMU repairs; a clean close clears it after a full flush.
  const lazy = (h.compatible & L.COMPAT_LAZY_REFCOUNTS) !== 0;
  let dirtyOnDisk = false;
  const setDirtyBit = async (on: boolean) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE((on ? h.incompatible | L.INCOMPAT_DIRTY : h.incompatible & ~L.INCOMPAT_DIRTY) >>> 0);
    await file.write(76, b);
    await file.flush();
    dirtyOnDisk = on;
  };
  // QEMU's overlap check (overlap.ts): the map of the metadata, read live from the open image.
  const overlap =
    refcounts &&
    new MetadataOverlap(
      h.clusterSize,
      {
        h,
        get l1() {
          return o.l1;
        },
        get l1Offset() {
          return o.l1Offset;
        },
        refcountBlocks: refcounts.blockOffsets,
        snapshots: o.snapshots,
        bitmapTables: (add) => bitmaps.forEachTable(add),
      },
      async () => {
        // The corrupt bit (QEMU qcow2_mark_corrupt), kept by every later header write (h.incompatible).
        h.incompatible = (h.incompatible | L.INCOMPAT_CORRUPT) >>> 0;
        const b = Buffer.alloc(4);
        b.writeUInt32BE((dirtyOnDisk ? h.incompatible | L.INCOMPAT_DIRTY : h.incompatible) >>> 0);
        await file.write(76, b);
        await file.flush();
      },
      nodeName,
    );
  if (refcounts) refcounts.guard = overlap;
  const writerContext: WriterContext | undefined = refcounts && {
    h,
    file,
    l1: o.l1,
    l1Offset: o.l1Offset,
    cache: o.l2Cache,
    refcounts,
    readGuest,
    get hasBacking() {
      return backing !== undefined;
    },
    data,
    externalData: dataNode !== undefined,
    dataRaw: (h.autoclear & L.AUTOCLEAR_DATA_FILE_RAW) !== 0,
    beforeFirstWrite: lazy ? () => setDirtyBit(true) : undefined,
    overlap: overlap!,
  };
  const writer = writerContext && new Qcow2Writer(writerContext);
  // Found on the first block status, as QEMU does, then kept for this open.
  let preallocated: boolean | undefined;
  let detecting: Promise<boolean> | undefined;
  const detectPrealloc = async () => {
    // The refcounts on disk must be current, not durable: no sync (QEMU reads its refcount cache).
    detecting ??= writer ? writer.withRefcountsWritten(() => detectMetadataPreallocation(file, h)) : detectMetadataPreallocation(file, h);
    preallocated = await detecting;
    return preallocated;
  };
  const resizeTarget: ResizeTarget | undefined = writer && {
    nodeName,
    h,
    file,
    refcounts: refcounts!,
    cache: o.l2Cache,
    tables,
    writer,
    wc: writerContext!,
    get backing() {
      return backing;
    },
    dataNode,
    get size() {
      return o.size;
    },
    set size(v) {
      o.size = v;
    },
    onNewL1(l1, at) {
      o.l1 = l1;
      o.l1Offset = at;
      overlap!.invalidate();
    },
  };
  const bitmaps = new Qcow2BitmapStore({ file, h, entries: o.bitmaps, refcounts, exclusive: writer ? (fn) => writer.exclusive(fn) : undefined });
  const snapshots = qcow2SnapshotHooks({
    snapshots: o.snapshots,
    // Live views: a resize moves the L1 table and changes the size after open.
    context: refcounts
      ? {
          h,
          file,
          refcounts,
          cache: o.l2Cache,
          get l1() {
            return o.l1;
          },
          get l1Offset() {
            return o.l1Offset;
          },
          snapshots: o.snapshots,
          get size() {
            return o.size;
          },
        }
      : undefined,
    drained: writer ? (fn) => writer.drained(fn) : undefined,
    refusal: dataNode ? new BlockError('ENOTSUP', 'qcow2: internal snapshots are not supported with an external data file', { field: 'data-file', node: nodeName }) : undefined,
    changed: () => {
      compressed.invalidate();
      overlap?.invalidate();
    },
    nodeName,
  });
  const readOnlyError = () =>
    Promise.reject(new BlockError('EROFS', o.snapshot !== undefined ? `qcow2: snapshot '${o.snapshot}' is open read-only` : 'qcow2: the node is read-only', { node: nodeName }));

  const writeCompressed = async (offset: number, data: Uint8Array): Promise<void> => {
    const cs = h.clusterSize;
    // One whole cluster; the last one of the disk may end early (it is padded with zeros).
    if (offset % cs !== 0 || (data.length !== cs && offset + data.length !== o.size) || data.length > cs) {
      throw new BlockError('EINVAL', `qcow2: write-compressed: needs one whole cluster (${cs} bytes) at a cluster-aligned offset, got ${data.length} bytes at ${offset}`, {
        offset,
        node: nodeName,
      });
    }
    if (dataNode) throw new BlockError('ENOTSUP', 'qcow2: compressed writes are not possible with an external data file', { field: 'data-file', node: nodeName });
    let cluster = data;
    if (data.length < cs) {
      cluster = new Uint8Array(cs);
      cluster.set(data);
    }
    const packed = await compressCluster(h.compressionType, cluster);
    if (!packed) return writer!.write(offset, data); // incompressible: a normal cluster, as QEMU does
    compressed.invalidate(); // the host bytes of an old compressed cluster may be reused
    await writer!.writeCompressed(offset, packed);
    compressed.invalidate();
  };

  return {
    alignment: 1,
    length: () => o.size,
    read: readGuest,
    write: writer ? (offset, data) => writer.write(offset, data) : readOnlyError,
    writeZeroes: writer ? (offset, length) => writer.writeZeroes(offset, length) : readOnlyError,
    discard: writer ? (offset, length) => writer.discard(offset, length) : readOnlyError,
    writeCompressed: writer ? (offset, data) => writeCompressed(offset, data) : readOnlyError,
    flush: writer ? () => writer.flush() : async () => {},
    async blockStatus(offset, length): Promise<BlockStatus> {
      const m = await tables.map(offset, length);
      if (m.kind === 'data') {
        // Only an image with metadata preallocation asks its file too (QEMU's BDRV_BLOCK_RECURSE):
        // preallocated clusters over holes read as zeros. Not an external data file.
        let length = m.length;
        let zero = false;
        if (!dataNode && (preallocated ?? (await detectPrealloc()))) {
          if (m.host < data.length) {
            const f = await data.blockStatus(m.host, Math.min(length, data.length - m.host));
            zero = f.zero;
            length = f.length;
          } else zero = true;
        }
        return { offset, length, data: true, zero, allocated: true, depth: 0, hostOffset: m.host, hostNode: data.name };
      }
      if (m.kind === 'compressed') return { offset, length: m.length, data: true, zero: false, allocated: true, depth: 0 };
      if (m.kind === 'zero') return { offset, length: m.length, data: false, zero: true, allocated: true, depth: 0 };
      if (backing && offset < backing.length) {
        const s = await backing.blockStatus(offset, Math.min(m.length, backing.length - offset));
        return { ...s, offset, depth: s.depth + 1 };
      }
      return { offset, length: m.length, data: false, zero: true, allocated: false, depth: 0 };
    },
    truncate: resizeTarget ? (newSize, options) => (overlap!.corrupt ? overlap!.refused() : resizeQcow2(resizeTarget, newSize, options).finally(() => overlap!.invalidate())) : readOnlyError,
    loadBitmaps: () => bitmaps.load(),
    canStoreBitmap: (name, granularity) => bitmaps.canStore(name, granularity),
    storeBitmaps: (list) => bitmaps.store(list).finally(() => overlap?.invalidate()),
    removeStoredBitmap: (name) => bitmaps.remove(name).finally(() => overlap?.invalidate()),
    snapshots,
    changeBackingFile: (name, format) => changeBackingFile({ h, file, nodeName, exclusive: writer ? (fn) => writer.exclusive(fn) : undefined }, name, format),
    replaceBacking(next) {
      backing = next ?? undefined;
    },
    async reopen(readOnly) {
      if (!readOnly && o.snapshot !== undefined) throw new BlockError('EROFS', `qcow2: snapshot '${o.snapshot}' is open read-only`, { node: nodeName, field: 'snapshot' });
      // The writer's state goes to disk as at a close (not once marked corrupt); the image is read again in the new mode (a writable one gets its refcounts and writer).
      if (!overlap?.corrupt) {
        await writer?.flush();
        if (dirtyOnDisk) await setDirtyBit(false);
      }
      const image = await readImage(file, !readOnly, nodeName, o.options);
      return qcow2Instance({ ...o, ...image, backing: backing as BlockNode | undefined });
    },
    async close() {
      // Marked corrupt: nothing more is written (QEMU drops the node's caches too); the tables
      // on disk are as a crash would leave them, the dirty bit (lazy refcounts) stays set.
      if (overlap?.corrupt) return overlap.settled();
      await writer?.flush();
      if (dirtyOnDisk) await setDirtyBit(false);
    },
    info: () => qcow2Info({ ...o, bitmaps: bitmaps.listed(), l2CacheEntries: tables.l2CacheEntries }),
  };
}
