import * as z from 'zod';
import { builtOnce } from '../../node/lazy-driver.js';
import { BlockError, fromErrno } from '../../errors.js';
import { type BlockStatus, type DriverInstance, defineDriver } from '../../node/driver.js';
import { isRbdImage, type RbdConnector, type RbdImage, type RbdImageStat, type RbdOpenRequest, settlesWithBlockErrors } from './image.js';

// The image contract moved to image.ts; importers of this module keep finding it here.
export { isRbdImage, type RbdConnector, type RbdImage, type RbdImageStat, type RbdOpenRequest, settlesWithBlockErrors } from './image.js';

const name = (what: string) =>
  z
    .string()
    .min(1, 'must not be empty')
    .refine((s) => !s.includes('\0'), `${what} must not contain NUL`);

// built when first asked for: a schema costs every start, and most runs open no such node
const schema = builtOnce(() =>
  z.preprocess(
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
  ),
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
  get schema() {
    return schema();
  },
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
