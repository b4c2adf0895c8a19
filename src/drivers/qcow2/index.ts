import { z } from 'zod';
import { BlockError } from '../../errors.js';
import { type BlockStatus, type DriverInstance, defineDriver, type NodeOptions } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { sizeSchema } from '../../options/size.js';
import { identity, locationOf, probeLocation, protocolOptions, resolveName } from './backing.js';
import { type Qcow2Bitmap, readBitmaps } from './bitmaps.js';
import { decompressCluster } from './compressed.js';
import { featureList, parseHeader, type Qcow2Header } from './header.js';
import * as L from './limits.js';
import { checkSnapshotL1, type Qcow2Snapshot, readSnapshots } from './snapshots.js';
import { ClusterMap } from './tables.js';

const schema = z
  .object({
    /** Bytes of L2 tables to cache (QEMU l2-cache-size); default 4 MiB. */
    l2CacheSize: sizeSchema.default(4 * 1024 * 1024),
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

/** The qcow2 format, read-only: v2 and v3, compression, backing chains, subclusters, external data files, snapshots. */
export const qcow2Driver = defineDriver({
  name: 'qcow2',
  capabilities: { kind: 'format', readOnly: true, supportsBacking: true },
  schema,
  children: { file: 'required', backing: 'optional', 'data-file': 'optional' },
  async open(ctx): Promise<DriverInstance> {
    const { options, nodeName } = ctx;
    const file = ctx.children.get('file')!;
    const fileSize = file.length;
    const readFile = async (offset: number, length: number) => {
      const b = new Uint8Array(length);
      await readClamped(file, offset, b);
      return b;
    };
    const first = new Uint8Array(Math.min(fileSize, 2 ** L.MAX_CLUSTER_BITS));
    await readClamped(file, 0, first);
    const h = parseHeader(first, fileSize);

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
    const tables = new ClusterMap(h, l1, l1Offset, fileSize, readFile, options.l2CacheSize);

    const image = locationOf(file);
    // External data file: given as a child, or named in the header.
    let dataNode = ctx.children.get('data-file');
    if (dataNode && !h.hasDataFile) {
      throw new BlockError('EINVAL', `data-file: can only be set for an image with an external data file`, { field: 'data-file', node: nodeName });
    }
    if (!dataNode && h.incompatible & L.INCOMPAT_DATA_FILE) {
      if (h.dataFile === undefined) {
        throw new BlockError('EINVAL', `data-file: required: the image uses an external data file and its header names none`, { field: 'data-file', node: nodeName });
      }
      dataNode = await ctx.openChild('data-file', protocolOptions(resolveName(image, h.dataFile, 'data file', nodeName), true));
    }
    const data = dataNode ?? file;
    const dataSize = data.length;

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
      const opts: NodeOptions = { driver: format, readOnly: true, file: protocolOptions(loc, true) };
      if (format === 'qcow2') opts.backingChain = chain;
      backing = await ctx.openChild('backing', opts);
    }

    // One decompressed cluster kept: sequential reads of a compressed image hit it.
    let zHost = -1;
    const zBuf = new Uint8Array(h.clusterSize);
    let zInput = new Uint8Array(0);
    const compressed = async (host: number, csize: number): Promise<Uint8Array> => {
      if (zHost === host) return zBuf;
      const n = Math.min(csize, Math.max(0, fileSize - host));
      if (n <= 0) throw new BlockError('ECORRUPT', `qcow2: compressed data at ${host} is beyond the end of the file`, { offset: host });
      if (zInput.length < n) zInput = new Uint8Array(n);
      const input = zInput.subarray(0, n);
      await file.read(host, input);
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

    const instance: DriverInstance = {
      alignment: 1,
      length: () => size,
      async read(offset, buffer) {
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
            if (m.kind === 'data') start(readClamped(data, m.host, part));
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
      },
      write: () => Promise.reject(new BlockError('EROFS', 'qcow2 is read-only here', { node: nodeName })),
      flush: async () => {},
      discard: () => Promise.reject(new BlockError('EROFS', 'qcow2 is read-only here', { node: nodeName })),
      async blockStatus(offset, length): Promise<BlockStatus> {
        const m = await tables.map(offset, length);
        if (m.kind === 'data') {
          // Like QEMU, ask the image file too (not an external data file): preallocated
          // clusters over holes read as zeros.
          let length = m.length;
          let zero = false;
          if (dataNode) {
            // external data file: reported as data, as QEMU does
          } else if (m.host < dataSize) {
            const f = await data.blockStatus(m.host, Math.min(length, dataSize - m.host));
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
      async close() {},
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
