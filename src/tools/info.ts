import { stat } from 'node:fs';
import { qapiSnapshotInfo } from '../drivers/qcow2/snapshots.js';
import type { DriveOptions } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import { canceled, type InputOptions, openInput } from './open-input.js';

/** Drivers that are protocols: opened as the top node, qemu-img calls their format raw. */
const PROTOCOLS = new Set(['file', 'nbd', 'http', 'rbd']);

/** A snapshot in qemu-img info's JSON (QAPI SnapshotInfo; no "icount"). */
export interface ImageSnapshotInfo {
  /** The snapshot's unique id. */
  id: string;
  /** The snapshot's name. */
  name: string;
  /** Bytes of saved VM state (0 for a disk-only snapshot). */
  'vm-state-size': number;
  /** Wall-clock time the snapshot was taken: seconds since the epoch. */
  'date-sec': number;
  /** Nanoseconds part of the wall-clock time. */
  'date-nsec': number;
  /** Guest clock at the snapshot: seconds. */
  'vm-clock-sec': number;
  /** Nanoseconds part of the guest clock. */
  'vm-clock-nsec': number;
}

/** qcow2's "format-specific" data, keys and order as qemu-img prints them. */
export interface Qcow2FormatSpecific {
  /** Format version: `0.10` (v2) or `1.1` (v3). */
  compat: string;
  /** Compression of compressed clusters: `zlib` or `zstd` (v3 only). */
  'compression-type'?: string;
  /** Refcount updates may be deferred (v3 only). */
  'lazy-refcounts'?: boolean;
  /** Persistent dirty bitmaps stored in the image (v3 only). */
  bitmaps?: {
    /** Bitmap flags: `in-use`, `auto`. */
    flags: string[];
    /** The bitmap's name. */
    name: string;
    /** Bytes each bit stands for. */
    granularity: number;
  }[];
  /** Width of a refcount entry in bits. */
  'refcount-bits': number;
  /** Name of the external data file, if any. */
  'data-file'?: string;
  /** The external data file is a valid raw image by itself. */
  'data-file-raw'?: boolean;
  /** The corrupt bit is set (v3 only). */
  corrupt?: boolean;
  /** Subclusters: 32 per cluster (v3 only). */
  'extended-l2'?: boolean;
}

/**
 * One image as `qemu-img info --output=json` describes it (QAPI ImageInfo, kebab-case keys in its
 * order); a key qemu-img leaves out is absent (undefined here).
 */
export interface ImageInfo {
  /** The image's file name or URL. */
  filename?: string;
  /** The image format (`qcow2`, `raw`). */
  format: string;
  /** The image was not closed cleanly (qcow2's dirty bit; false for raw over a file). */
  'dirty-flag'?: boolean;
  /** Bytes the image file takes on disk (a local file only). */
  'actual-size'?: number;
  /** Disk size the guest sees, in bytes. */
  'virtual-size': number;
  /** Cluster size in bytes (qcow2). */
  'cluster-size'?: number;
  /** The backing file name as the header stores it. */
  'backing-filename'?: string;
  /** The backing file name resolved against the image's directory. */
  'full-backing-filename'?: string;
  /** The backing file's format as the header stores it. */
  'backing-filename-format'?: string;
  /** Internal snapshots, when there are any. */
  snapshots?: ImageSnapshotInfo[];
  /** Format-specific data (qcow2). */
  'format-specific'?: {
    /** The format the data is about. */
    type: 'qcow2';
    /** The format's own facts. */
    data: Qcow2FormatSpecific;
  };
}

/** Options of {@link imageInfo}. */
export interface ImageInfoOptions extends InputOptions {
  /** Describe every image of the backing chain, top first (qemu-img's `--backing-chain`): the result is an array. */
  backingChain?: boolean;
}

/** An image described, with its qcow2 feature bits (not part of qemu-img's JSON; the CLI prints them for people). */
export interface DescribedImage {
  info: ImageInfo;
  features?: unknown;
}

/**
 * One image of a chain in qemu-img info's JSON shape: what qemu-img prints that we know.
 * Not given: a snapshot's "icount".
 */
async function describe(node: BlockNode): Promise<ImageInfo> {
  const format = PROTOCOLS.has(node.driver.name) ? 'raw' : node.driver.name;
  const info = node.info();
  const file = node.child('file');
  const proto = file ?? node;
  // An http node names its URL (without credentials or query) where a file node names its path.
  const url = proto.driver.name === 'http' ? (proto.info().url as string) : undefined;
  const filename = (proto.options.filename as string | undefined) ?? url;
  // built in qemu-img's key order (JSON.stringify keeps it)
  const out: Partial<ImageInfo> & { format: string } = { filename, format };
  // qemu-img gives the dirty flag where the driver answers bdrv_get_info: qcow2, and raw over a file (not nbd, http, rbd)
  if (format === 'qcow2' || proto.driver.name === 'file') out['dirty-flag'] = format === 'qcow2' ? (info.dirty as boolean) : false;
  // qemu-img's "actual-size": the bytes the image file takes on disk (st_blocks * 512)
  if (proto.driver.name === 'file' && filename !== undefined) out['actual-size'] = (await statBlocks(filename)) * 512;
  out['virtual-size'] = node.length;
  if (format !== 'qcow2') {
    // The other formats (vpc, vhdx, vdi, vmdk) give their block size as qemu-img does, and format-specific data where they have some.
    if (typeof info.clusterSize === 'number') out['cluster-size'] = info.clusterSize;
    if (info.formatSpecific !== undefined) out['format-specific'] = info.formatSpecific as ImageInfo['format-specific'];
    return out as ImageInfo;
  }
  const v3 = info.compat === '1.1';
  const bitmaps = info.bitmaps as { name: string; granularity: number; flags: number }[];
  const snapshots = info.snapshots as Parameters<typeof qapiSnapshotInfo>[0][];
  const backing = info.backingFile as string | undefined;
  Object.assign(out, {
    'cluster-size': info.clusterSize,
    'backing-filename': backing,
    'full-backing-filename': fullBackingName(proto.driver.name === 'file' ? filename : undefined, backing),
    'backing-filename-format': info.backingFormat,
    // listed only when the image has some, as qemu-img lists them
    snapshots: snapshots.length > 0 ? snapshots.map(qapiSnapshotInfo) : undefined,
    'format-specific': {
      type: 'qcow2',
      // in the order qemu-img prints them; a v2 image has no feature bits (no lazy refcounts, corrupt bit, …)
      data: {
        compat: info.compat,
        'compression-type': info.compressionType,
        'lazy-refcounts': v3 ? info.lazyRefcounts : undefined,
        bitmaps: bitmaps.length > 0 ? bitmaps.map((b) => ({ flags: bitmapFlags(b.flags), name: b.name, granularity: b.granularity })) : undefined,
        'refcount-bits': info.refcountBits,
        'data-file': info.dataFile,
        'data-file-raw': info.dataFile ? info.dataFileRaw : undefined,
        corrupt: v3 ? info.corrupt : undefined,
        'extended-l2': v3 ? info.extendedL2 : undefined,
      },
    },
  });
  return out as ImageInfo;
}

/**
 * The backing file name as qemu-img info's "full-backing-filename": a relative name joined to the
 * directory of the image's name as given (no normalization), an absolute one as it is; only for a
 * local image file.
 */
/** A file's st_blocks, by callback: node:fs/promises would load readline and the watchers at start. */
function statBlocks(filename: string): Promise<number> {
  return new Promise((resolve, reject) => stat(filename, (err, st) => (err ? reject(err) : resolve(st.blocks))));
}

function fullBackingName(image: string | undefined, backing: string | undefined): string | undefined {
  if (image === undefined || backing === undefined) return undefined;
  if (backing.startsWith('/') || /^[a-z][a-z0-9+.-]*:/i.test(backing)) return backing;
  return image.slice(0, image.lastIndexOf('/') + 1) + backing;
}

/** A bitmap's flags by the names qemu-img info gives them (bit 0 in-use, bit 1 auto). */
function bitmapFlags(flags: number): string[] {
  const names: string[] = [];
  if (flags & 1) names.push('in-use');
  if (flags & 2) names.push('auto');
  return names;
}

/** The image (and with `backingChain` each image below it), described with the qcow2 feature bits the CLI's text adds. */
export async function describeImages(target: string | DriveOptions, options: ImageInfoOptions = {}): Promise<DescribedImage[]> {
  const { drive, close } = await openInput(target, options, 'info');
  try {
    const nodes: BlockNode[] = [];
    for (let node: BlockNode | undefined = drive.node; node; node = options.backingChain ? node.child('backing') : undefined) nodes.push(node);
    const chain = await Promise.all(nodes.map(describe));
    if (options.signal?.aborted) throw canceled('info', options.signal);
    // an nbd or rbd image names no file: qemu-img's filename is the target as written
    if (chain[0].filename === undefined && typeof target === 'string') chain[0].filename = target;
    return chain.map((info, i) => (nodes[i].driver.name === 'qcow2' ? { info, features: nodes[i].info().features } : { info }));
  } finally {
    await close();
  }
}

/** What `qemu-img info --output=json` prints for an image (path, `nbd://`, `http(s)://`, `rbd:` or drive options). */
export function imageInfo(target: string | DriveOptions, options?: ImageInfoOptions & { backingChain?: false }): Promise<ImageInfo>;
/** What `qemu-img info --backing-chain --output=json` prints: each image of the chain, top first. */
export function imageInfo(target: string | DriveOptions, options: ImageInfoOptions & { backingChain: true }): Promise<ImageInfo[]>;
export function imageInfo(target: string | DriveOptions, options?: ImageInfoOptions): Promise<ImageInfo | ImageInfo[]>;
export async function imageInfo(target: string | DriveOptions, options: ImageInfoOptions = {}): Promise<ImageInfo | ImageInfo[]> {
  const chain = (await describeImages(target, options)).map((d) => d.info);
  return options.backingChain ? chain : chain[0];
}
