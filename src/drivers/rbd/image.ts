// The contract between the rbd driver and whatever reaches the image (librbd, a user's client, a fake).
import type { BlockStatus } from '../../node/driver.js';

/** Layout facts about an open RBD image (librbd: rbd_image_info_t). */
export interface RbdImageStat {
  /** Virtual size in bytes. */
  size: number;
  /** Size of one RADOS object (the striping unit), in bytes. */
  objectSize: number;
  /** Number of objects the image spans. */
  numObjects: number;
  /** log2 of `objectSize`. */
  order: number;
}

/**
 * One open RBD image, however it is reached (librbd, a user's own client, an in-memory fake).
 * Every method is asynchronous; many calls may be in flight at once. Failures are
 * {@link BlockError}s with a stable code (`ENOENT`, `EACCES`, `EIO`, `EROFS`, …).
 * The block layer only calls with in-bounds ranges and never writes a read-only image.
 */
export interface RbdImage {
  /** Virtual size in bytes. */
  size(): Promise<number>;
  /** Layout of the image (size, object size). */
  stat(): Promise<RbdImageStat>;
  /** Fills `buffer` with `buffer.length` bytes from `offset`. */
  read(offset: number, buffer: Uint8Array): Promise<void>;
  /** Writes `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Releases a range; it reads as zeros afterwards where whole objects were released. */
  discard(offset: number, length: number): Promise<void>;
  /** Makes a range read as zeros. If absent, the block layer writes zero buffers. */
  writeZeroes?(offset: number, length: number): Promise<void>;
  /** Allocation status of the extent starting at `offset`. If absent, everything counts as data. */
  blockStatus?(offset: number, length: number): Promise<BlockStatus>;
  /** Makes completed writes durable. */
  flush(): Promise<void>;
  /** Waits for requests in flight, then releases the image. */
  close(): Promise<void>;
}

/** Where an RBD image is and how to authenticate: the driver's options as one adapter sees them. */
export interface RbdOpenRequest {
  /** RADOS pool holding the image. */
  pool: string;
  /** RADOS namespace inside the pool ('' for the default one). */
  namespace: string;
  /** Image name. */
  image: string;
  /** Snapshot to open (read-only), if any. */
  snapshot?: string;
  /** Path of ceph.conf (default: librados' search path). */
  conf?: string;
  /** Ceph user name without `client.` (default: the configuration's, normally `admin`). */
  user?: string;
  /** Path of a keyring file. */
  keyring?: string;
  /** A cephx key (base64) used instead of a keyring. */
  keySecret?: string;
  /** Cluster name (selects `/etc/ceph/<cluster>.conf` when `conf` is absent). */
  cluster?: string;
  /** Further librados configuration settings (name → value), like QEMU's `rbd:` filename options. */
  config: Record<string, string>;
  /** Open without write access. */
  readOnly: boolean;
  /** Node name, for error context. */
  nodeName: string;
}

/**
 * Marks an {@link RbdImage} whose rejections are complete BlockErrors already (the librbd
 * adapter): the driver hands its promises on as they are, without a wrapping layer per request.
 */
export const settlesWithBlockErrors: unique symbol = Symbol('rbd.settlesWithBlockErrors');

/** Opens images for the `rbd` driver: the real librbd adapter or a user's own. */
export type RbdConnector = (request: RbdOpenRequest) => Promise<RbdImage>;

const IMAGE_METHODS = ['size', 'stat', 'read', 'write', 'discard', 'flush', 'close'] as const;

/** True if `v` has the methods of an {@link RbdImage}. */
export function isRbdImage(v: unknown): v is RbdImage {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return IMAGE_METHODS.every((m) => typeof o[m] === 'function');
}
