import { z } from 'zod';
import { BlockError, fromErrno } from '../../errors.js';
import { type BlockStatus, type DriverInstance, defineDriver } from '../../node/driver.js';

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

const name = (what: string) =>
  z
    .string()
    .min(1, 'must not be empty')
    .refine((s) => !s.includes('\0'), `${what} must not contain NUL`);

const schema = z.preprocess(
  // QEMU spells it key-secret; our options are camelCase. Accept both.
  (v) => {
    if (typeof v !== 'object' || v === null || !('key-secret' in v)) return v;
    const { 'key-secret': keySecret, ...rest } = v as Record<string, unknown>;
    return { ...rest, keySecret };
  },
  z
    .object({
      /** RADOS pool holding the image. */
      pool: name('pool').optional(),
      /** RADOS namespace inside the pool. */
      namespace: z.string().default(''),
      /** Image name. */
      image: name('image').optional(),
      /** Snapshot to open; snapshots are read-only. */
      snapshot: name('snapshot').optional(),
      /** Path of ceph.conf. */
      conf: name('conf').optional(),
      /** Ceph user (without `client.`). */
      user: name('user').optional(),
      /** Path of a keyring file. */
      keyring: name('keyring').optional(),
      /** The cephx key itself (base64), instead of a keyring. */
      keySecret: name('key-secret').optional(),
      /** Cluster name. */
      cluster: name('cluster').optional(),
      /** Extra librados settings, e.g. `{ client_mount_timeout: '10' }`. */
      config: z.record(z.string(), z.string()).default({}),
      /** An open {@link RbdImage}, or an {@link RbdConnector} that opens one; default: librbd. */
      adapter: z
        .custom<RbdImage | RbdConnector>(
          (v) => typeof v === 'function' || isRbdImage(v),
          'must be an RbdImage (size, stat, read, write, discard, flush, close) or a function opening one',
        )
        .optional(),
    })
    .strict()
    .superRefine((o, ctx) => {
      if (o.keyring !== undefined && o.keySecret !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['keySecret'], message: 'give either keyring or key-secret, not both' });
      }
      // An image object handed in needs no address; anything else does.
      if (!isRbdImage(o.adapter)) {
        if (o.pool === undefined) ctx.addIssue({ code: 'custom', path: ['pool'], message: 'required' });
        if (o.image === undefined) ctx.addIssue({ code: 'custom', path: ['image'], message: 'required' });
      }
    }),
);

async function loadLibrbdConnector(): Promise<RbdConnector> {
  const { openLibrbdImage } = await import('./librbd.js');
  return openLibrbdImage;
}

/**
 * A Ceph RBD image (QEMU: block/rbd.c). The image is reached through an {@link RbdImage}
 * adapter: librbd through FFI by default, or the `adapter` option (a user's client, a fake).
 */
export const rbdDriver = defineDriver({
  name: 'rbd',
  capabilities: { kind: 'protocol' },
  schema,
  async open({ options, readOnly, nodeName }): Promise<DriverInstance> {
    const { adapter, pool = '', image: imageName = '', namespace, snapshot } = options;
    const where = `${pool}/${namespace ? `${namespace}/` : ''}${imageName}${snapshot ? `@${snapshot}` : ''}`;
    if (snapshot !== undefined && !readOnly) {
      throw new BlockError('EROFS', `snapshot: rbd snapshots are read-only; open '${where}' with readOnly: true`, {
        node: nodeName,
        field: 'snapshot',
        path: where,
      });
    }
    let image: RbdImage;
    if (isRbdImage(adapter)) image = adapter;
    else {
      const connect = adapter ?? (await loadLibrbdConnector());
      const request: RbdOpenRequest = { ...options, pool, image: imageName, namespace, readOnly, nodeName };
      delete (request as { adapter?: unknown }).adapter;
      try {
        image = await connect(request);
      } catch (e) {
        throw fromErrno(e, `could not open rbd image '${where}'`, { node: nodeName, path: where });
      }
    }
    let stat: RbdImageStat;
    try {
      stat = await image.stat();
    } catch (e) {
      await image.close().catch(() => undefined);
      throw fromErrno(e, `could not stat rbd image '${where}'`, { node: nodeName, path: where });
    }
    const size = stat.size;
    const ctx = (offset: number, length: number) => ({ node: nodeName, path: where, offset, length });
    const wrap = (op: string, offset: number, length: number) => (e: unknown) => {
      throw fromErrno(e, `rbd ${op} at ${offset}+${length} on '${where}'`, ctx(offset, length));
    };
    // fromErrno keeps a BlockError as it is, so for an image that only rejects with those the
    // wrapper would change nothing but cost a promise and two closures per request.
    const direct = (image as { [settlesWithBlockErrors]?: boolean })[settlesWithBlockErrors] === true;
    const instance: DriverInstance = {
      alignment: 1,
      length: () => size,
      read: direct ? (offset, buffer) => image.read(offset, buffer) : (offset, buffer) => image.read(offset, buffer).catch(wrap('read', offset, buffer.length)),
      write: direct ? (offset, data) => image.write(offset, data) : (offset, data) => image.write(offset, data).catch(wrap('write', offset, data.length)),
      flush: () => image.flush().catch(wrap('flush', 0, 0)),
      discard: (offset, length) => image.discard(offset, length).catch(wrap('discard', offset, length)),
      async blockStatus(offset, length): Promise<BlockStatus> {
        if (image.blockStatus) return image.blockStatus(offset, length).catch(wrap('block-status', offset, length));
        return { offset, length, data: true, zero: false, allocated: true, depth: 0 };
      },
      close: () => image.close(),
      info: () => ({
        pool,
        namespace,
        image: imageName,
        ...(snapshot === undefined ? {} : { snapshot }),
        objectSize: stat.objectSize,
        order: stat.order,
      }),
    };
    if (image.writeZeroes) {
      const writeZeroes = image.writeZeroes.bind(image);
      instance.writeZeroes = (offset, length) => writeZeroes(offset, length).catch(wrap('write-zeroes', offset, length));
    }
    return instance;
  },
});
