import { z } from 'zod';
import { BlockError } from '../../errors.js';
import { type BlockStatus, type DriverInstance, defineDriver, type NodeOptions } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { sizeSchema } from '../../options/size.js';
import { identity, locationOf, probeLocation, protocolOptions, resolveName } from './backing.js';
import { type Qcow2Bitmap, readBitmaps } from './bitmaps.js';
import { checkAndRepair } from './check.js';
import { compressCluster, decompressCluster } from './compressed.js';
import { featureList, parseHeader, type Qcow2Header } from './header.js';
import * as L from './limits.js';
import { repairDirtyImage } from './dirty-repair.js';
import { L2Cache } from './l2-cache.js';
import { Refcounts } from './refcounts.js';
import { checkSnapshotL1, readSnapshots, type Qcow2Snapshot } from './snapshots.js';
import { ClusterMap } from './tables.js';
import { Qcow2Writer } from './writer.js';

const schema = z
  .object({
    /** Bytes of L2 tables to cache (QEMU l2-cache-size); default 4 MiB. */
    l2CacheSize: sizeSchema.default(4 * 1024 * 1024),
    /** Bytes of refcount blocks to cache (QEMU refcount-cache-size); default 1 MiB. */
    refcountCacheSize: sizeSchema.default(1024 * 1024),
    /** Open this internal snapshot (id or name) instead of the current state. */
    snapshot: z.string().min(1).optional(),
    /** @internal real paths of the overlays above this image, to refuse backing loops. */
    backingChain: z.array(z.string()).default([]),
  })
  .strict();

/** Reads 4 bytes of a file to tell qcow2 from raw (the only formats we probe, as the issue asks). */
export function probeFormat(filename: string): Promise<'qcow2' | 'raw'> {
  return probeLocation({ kind: 'file', name: filename });
}

/** Reads exactly `length` bytes at `offset` of `node`, zeros past its end (a file may end inside its last cluster). */
async function readClamped(node: BlockNode, offset: number, target: Uint8Array): Promise<void> {
  const size = node.length;
  const n = Math.max(0, Math.min(target.length, size - offset));
  if (n > 0) await node.read(offset, target.subarray(0, n));
  if (n < target.length) target.fill(0, n);
}

/** Why an image cannot be written here, or undefined (checked when it is opened read-write). */
function writeRefusal(h: Qcow2Header): { message: string; field: string } | undefined {
  if (h.incompatible & L.INCOMPAT_CORRUPT) return { message: 'the image is marked corrupt (repair it with qemu-img check -r all)', field: 'incompatible_features' };
  if (h.bitmaps) return { message: 'images with persistent bitmaps cannot be written here (QEMU would have to update the bitmaps)', field: 'bitmaps' };
  return undefined;
}

/** The qcow2 format: v2 and v3, compression, backing chains, subclusters, external data files, snapshots; writes to v2/v3 images. */
export const qcow2Driver = defineDriver({
  name: 'qcow2',
  capabilities: { kind: 'format', supportsBacking: true, keepsMetadata: true },
  schema,
  children: { file: 'required', backing: 'optional', 'data-file': 'optional' },
  check: checkAndRepair,
  async open(ctx): Promise<DriverInstance> {
    const { options, nodeName } = ctx;
    const file = ctx.children.get('file')!;
    const readFile = async (offset: number, length: number) => {
      const b = new Uint8Array(length);
      await readClamped(file, offset, b);
      return b;
    };
    const readHeader = async () => parseHeader(await readFile(0, Math.min(file.length, 2 ** L.MAX_CLUSTER_BITS)), file.length);
    let h = await readHeader();
    // Writable unless the node is read-only or a snapshot is open (snapshots are read-only, as qemu-img -l).
    const writable = !ctx.readOnly && options.snapshot === undefined;
    if (writable) {
      // A broken bitmap directory is reported as such (ECORRUPT), as on a read-only open, before the refusal to write bitmaps.
      if (h.bitmaps) await readBitmaps(h, readFile);
      const refusal = writeRefusal(h);
      if (refusal) throw new BlockError('ENOTSUP', `qcow2: ${refusal.message}; open it read-only`, { field: refusal.field, node: nodeName });
      if (h.incompatible & L.INCOMPAT_DIRTY) {
        // QEMU repairs a dirty image (lazy refcounts, then a crash) when it opens it read-write.
        await repairDirtyImage(file, nodeName);
        h = await readHeader();
      }
    }
    const fileSize = file.length;

    const snapshots = await readSnapshots(h, readFile);
    const bitmaps = await readBitmaps(h, readFile);
    let l1Offset = h.l1TableOffset;
    let l1Size = h.l1Size;
    // A snapshot is read with the image's current virtual size, as qemu-img convert -l does.
    const size = h.size;
    if (options.snapshot !== undefined) {
      const s = snapshots.find((x) => x.id === options.snapshot) ?? snapshots.find((x) => x.name === options.snapshot);
      if (!s) {
        throw new BlockError('ENOENT', `snapshot: no snapshot with id or name '${options.snapshot}' (have: ${snapshots.map((x) => x.name || x.id).join(', ') || 'none'})`, {
          field: 'snapshot',
          node: nodeName,
        });
      }
      checkSnapshotL1(s, h);
      l1Offset = s.l1TableOffset;
      l1Size = s.l1Size;
    }
    const l1 = Buffer.from(l1Size > 0 ? await readFile(l1Offset, l1Size * 8) : new Uint8Array(0));
    const metadataIO = {
      read: readFile,
      write: (offset: number, data: Uint8Array) => file.write(offset, data, true),
      sync: () => file.flush(),
    };
    const refcounts = writable
      ? new Refcounts(
          metadataIO,
          h.clusterBits,
          h.refcountOrder,
          h.refcountTableOffset,
          h.refcountTableClusters,
          await readFile(h.refcountTableOffset, h.refcountTableClusters * h.clusterSize),
          fileSize,
          options.refcountCacheSize,
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
        )
      : undefined;
    const fileLimit = () => Math.max(file.length, refcounts?.end ?? 0);
    const l2Cache = new L2Cache(h.clusterSize, readFile, options.l2CacheSize);
    const tables = new ClusterMap(h, l1, l1Offset, fileLimit, l2Cache);

    const image = locationOf(file);
    // QEMU inherits force-share down the graph: the backing chain and data file share as the image's file does.
    const forceShare = file.options.forceShare === true;
    // External data file: given as a child, or named in the header.
    let dataNode = ctx.children.get('data-file');
    if (dataNode && !h.hasDataFile) {
      throw new BlockError('EINVAL', `data-file: can only be set for an image with an external data file`, { field: 'data-file', node: nodeName });
    }
    if (!dataNode && h.incompatible & L.INCOMPAT_DATA_FILE) {
      if (h.dataFile === undefined) {
        throw new BlockError('EINVAL', `data-file: required: the image uses an external data file and its header names none`, { field: 'data-file', node: nodeName });
      }
      dataNode = await ctx.openChild('data-file', protocolOptions(resolveName(image, h.dataFile, 'data file', nodeName), !writable, forceShare));
    }
    const data = dataNode ?? file;

    // Backing chain: given as a child, disabled with backing: null, or named in the header.
    let backing = ctx.children.get('backing');
    if (!backing && h.backingFile !== undefined && !ctx.disabledChildren.has('backing')) {
      const loc = resolveName(image, h.backingFile, 'backing file', nodeName);
      const real = await identity(loc, nodeName);
      const self = image ? await identity(image, nodeName).catch(() => image.name) : undefined;
      const chain = [...options.backingChain, ...(self ? [self] : [])];
      if (chain.includes(real)) {
        throw new BlockError('ECORRUPT', `qcow2: backing chain loops: ${[...chain, real].join(' -> ')}`, { field: 'backing_file', path: real });
      }
      if (chain.length >= L.MAX_CHAIN_DEPTH) {
        throw new BlockError('ENOTSUP', `qcow2: backing chain deeper than ${L.MAX_CHAIN_DEPTH} images at '${loc.name}'`, { field: 'backing_file', path: real });
      }
      let format = h.backingFormat;
      if (format === undefined) format = await probeLocation(loc);
      if (format !== 'qcow2' && format !== 'raw') {
        throw new BlockError('ENOTSUP', `qcow2: backing format '${format}' of '${loc.name}' is not supported (qcow2 or raw)`, { field: 'backing_fmt', path: loc.name });
      }
      const opts: NodeOptions = { driver: format, readOnly: true, file: protocolOptions(loc, true, forceShare) };
      if (format === 'qcow2') opts.backingChain = chain;
      backing = await ctx.openChild('backing', opts);
    }

    // One decompressed cluster kept: sequential reads of a compressed image hit it.
    let zHost = -1;
    const zBuf = new Uint8Array(h.clusterSize);
    let zInput = new Uint8Array(0);
    const compressed = async (host: number, csize: number): Promise<Uint8Array> => {
      if (zHost === host) return zBuf;
      const n = Math.min(csize, Math.max(0, file.length - host));
      if (n <= 0) throw new BlockError('ECORRUPT', `qcow2: compressed data at ${host} is beyond the end of the file`, { offset: host });
      if (zInput.length < n) zInput = new Uint8Array(n);
      const input = zInput.subarray(0, n);
      const pin = refcounts?.pin(host, n);
      try {
        await file.read(host, input);
      } finally {
        if (pin) refcounts!.unpin(pin);
      }
      zHost = -1;
      decompressCluster(h.compressionType, input, zBuf, host);
      zHost = host;
      return zBuf;
    };
    // zInput and zBuf are shared: one compressed cluster at a time, copied out before the next
    // may overwrite them (concurrent reads otherwise got each other's clusters).
    let zQueue: Promise<unknown> = Promise.resolve();
    const readCompressed = (host: number, csize: number, from: number, part: Uint8Array): Promise<void> => {
      const done = zQueue.then(async () => {
        const cluster = await compressed(host, csize);
        part.set(cluster.subarray(from, from + part.length));
      });
      zQueue = done.catch(() => {});
      return done;
    };

    const readBacking = async (offset: number, target: Uint8Array) => {
      if (!backing) return void target.fill(0);
      await readClamped(backing, offset, target);
    };

    // Host clusters under a read are not reused until it is done (see Refcounts.pin); only a
    // writable image frees clusters.
    const pinnedRead = (host: number, part: Uint8Array): Promise<void> => {
      if (!refcounts || dataNode) return readClamped(data, host, part);
      const pin = refcounts.pin(host, part.length);
      return readClamped(data, host, part).finally(() => refcounts.unpin(pin));
    };

    const readGuest = async (offset: number, buffer: Uint8Array): Promise<void> => {
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
            await readCompressed(m.host, m.compressedSize, offset + pos - m.clusterStart, part);
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
    const writer = refcounts
      ? new Qcow2Writer({
          h,
          file,
          l1,
          l1Offset,
          cache: l2Cache,
          refcounts,
          readGuest,
          hasBacking: backing !== undefined,
          data,
          externalData: dataNode !== undefined,
          dataRaw: (h.autoclear & L.AUTOCLEAR_DATA_FILE_RAW) !== 0,
          beforeFirstWrite: lazy ? () => setDirtyBit(true) : undefined,
        })
      : undefined;
    const readOnlyError = () =>
      Promise.reject(new BlockError('EROFS', options.snapshot !== undefined ? `qcow2: snapshot '${options.snapshot}' is open read-only` : 'qcow2: the node is read-only', { node: nodeName }));

    const writeCompressed = async (offset: number, data: Uint8Array): Promise<void> => {
      const cs = h.clusterSize;
      // One whole cluster; the last one of the disk may end early (it is padded with zeros).
      if (offset % cs !== 0 || (data.length !== cs && offset + data.length !== size) || data.length > cs) {
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
      zHost = -1; // the host bytes of an old compressed cluster may be reused
      await writer!.writeCompressed(offset, packed);
      zHost = -1;
    };

    const instance: DriverInstance = {
      alignment: 1,
      length: () => size,
      read: readGuest,
      write: writer ? (offset, data) => writer.write(offset, data) : readOnlyError,
      writeZeroes: writer ? (offset, length) => writer.writeZeroes(offset, length) : readOnlyError,
      discard: writer ? (offset, length) => writer.discard(offset, length) : readOnlyError,
      writeCompressed: writer ? (offset, data) => writeCompressed(offset, data) : readOnlyError,
      flush: writer ? () => writer.flush() : async () => {},
      async blockStatus(offset, length): Promise<BlockStatus> {
        const m = await tables.map(offset, length);
        if (m.kind === 'data') {
          // Like QEMU, ask the image file too (not an external data file): preallocated
          // clusters over holes read as zeros.
          let length = m.length;
          let zero = false;
          if (dataNode) {
            // external data file: reported as data, as QEMU does
          } else if (m.host < data.length) {
            const f = await data.blockStatus(m.host, Math.min(length, data.length - m.host));
            zero = f.zero;
            length = f.length;
          } else zero = true;
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
      async close() {
        await writer?.flush();
        if (dirtyOnDisk) await setDirtyBit(false);
      },
      info: () => info(h, size, snapshots, bitmaps, backing, dataNode, tables.l2CacheEntries, options.snapshot),
    };
    return instance;
  },
});

function info(
  h: Qcow2Header,
  size: number,
  snapshots: Qcow2Snapshot[],
  bitmaps: Qcow2Bitmap[],
  backing: BlockNode | undefined,
  dataNode: BlockNode | undefined,
  l2CacheEntries: number,
  snapshot: string | undefined,
): Record<string, unknown> {
  return {
    format: 'qcow2',
    version: h.version,
    compat: h.version === 3 ? '1.1' : '0.10',
    virtualSize: size,
    clusterSize: h.clusterSize,
    backingFile: h.backingFile,
    backingFormat: h.backingFormat,
    backingNode: backing?.name,
    dataFile: h.dataFile,
    dataFileRaw: (h.autoclear & L.AUTOCLEAR_DATA_FILE_RAW) !== 0,
    dataNode: dataNode?.name,
    compressionType: h.compressionType,
    extendedL2: h.extendedL2,
    refcountBits: 2 ** h.refcountOrder,
    lazyRefcounts: (h.compatible & 1) !== 0,
    dirty: (h.incompatible & L.INCOMPAT_DIRTY) !== 0,
    corrupt: (h.incompatible & L.INCOMPAT_CORRUPT) !== 0,
    features: featureList(h),
    snapshots: snapshots.map((s) => ({ id: s.id, name: s.name, size: s.size, date: s.date, vmClockNs: s.vmClockNs, vmStateSize: s.vmStateSize })),
    openSnapshot: snapshot,
    bitmaps: bitmaps.map((b) => ({ name: b.name, granularity: b.granularity, flags: b.flags })),
    l2CacheEntries,
  };
}
