import { BlockError, type BlockErrorCode } from '../../errors.js';
import type { BlockStatus } from '../../node/driver.js';
import type { RbdImage, RbdImageStat, RbdOpenRequest } from './image.js';

/** What a {@link FakeRbdImage} has been asked to do; object counts show librbd-style striping. */
export interface FakeRbdStats {
  /** Requests by kind. */
  reads: number;
  /** Write requests. */
  writes: number;
  /** Discard requests. */
  discards: number;
  /** Write-zeroes requests. */
  writeZeroes: number;
  /** Flush requests. */
  flushes: number;
  /** Per-object pieces of those requests (a request spanning 3 objects counts 3). */
  objectReads: number;
  /** Per-object pieces of writes. */
  objectWrites: number;
  /** Per-object pieces of discards. */
  objectDiscards: number;
  /** Per-object pieces of write-zeroes. */
  objectZeroes: number;
  /** Bytes returned by reads. */
  bytesRead: number;
  /** Bytes accepted by writes. */
  bytesWritten: number;
  /** Requests started and not yet settled. */
  inFlight: number;
  /** Most requests ever in flight at once. */
  maxInFlight: number;
  /** Objects currently holding data. */
  objects: number;
}

type FakeOp = 'read' | 'write' | 'discard' | 'write-zeroes' | 'flush';

/** Contents of one fake image: its objects by number. Snapshots are frozen copies. */
interface ImageData {
  size: number;
  order: number;
  objects: Map<number, Uint8Array>;
  snapshots: Map<string, Map<number, Uint8Array>>;
}

/** Options of a standalone {@link FakeRbdImage}. */
export interface FakeRbdImageOptions {
  /** Virtual size in bytes. */
  size: number;
  /** log2 of the object size (default 22: 4 MiB objects, as librbd). */
  order?: number;
  /** Refuse writes with EROFS. */
  readOnly?: boolean;
  /** Settle requests on a later turn of the event loop (default) or on the microtask queue. */
  completion?: 'macrotask' | 'microtask';
}

function copyObjects(objects: Map<number, Uint8Array>): Map<number, Uint8Array> {
  return new Map([...objects].map(([k, v]) => [k, v.slice()]));
}

/**
 * An in-memory RBD image for tests: data striped over objects of `2^order` bytes like
 * librbd, whole-object discards free objects, counters in {@link FakeRbdImage.stats}.
 */
export class FakeRbdImage implements RbdImage {
  /** Whether writes fail with EROFS. */
  readonly readOnly: boolean;
  private readonly data: ImageData;
  private readonly objects: Map<number, Uint8Array>;
  private readonly objectSize: number;
  private readonly later: (fn: () => void) => void;
  private readonly failures = new Map<FakeOp, BlockErrorCode>();
  private closed = false;
  private idle: (() => void) | null = null;
  private readonly counters: Omit<FakeRbdStats, 'objects'> = {
    reads: 0,
    writes: 0,
    discards: 0,
    writeZeroes: 0,
    flushes: 0,
    objectReads: 0,
    objectWrites: 0,
    objectDiscards: 0,
    objectZeroes: 0,
    bytesRead: 0,
    bytesWritten: 0,
    inFlight: 0,
    maxInFlight: 0,
  };

  /** A new empty image, or (from {@link FakeRbdCluster}) a view of shared image data. */
  constructor(options: FakeRbdImageOptions | { data: ImageData; objects: Map<number, Uint8Array>; readOnly: boolean; completion?: 'macrotask' | 'microtask' }) {
    if ('data' in options) {
      this.data = options.data;
      this.objects = options.objects;
    } else {
      const order = options.order ?? 22;
      checkOrder(order);
      checkSize(options.size);
      this.data = { size: options.size, order, objects: new Map(), snapshots: new Map() };
      this.objects = this.data.objects;
    }
    this.readOnly = options.readOnly ?? false;
    this.objectSize = 2 ** this.data.order;
    this.later = options.completion === 'microtask' ? queueMicrotask : (fn) => setImmediate(fn);
  }

  /** Counters of requests and object pieces so far. */
  get stats(): FakeRbdStats {
    return { ...this.counters, objects: this.objects.size };
  }

  /** Makes every later `op` fail with `code` (null: stop failing). */
  failWith(op: FakeOp, code: BlockErrorCode | null): void {
    if (code === null) this.failures.delete(op);
    else this.failures.set(op, code);
  }

  async size(): Promise<number> {
    return this.data.size;
  }

  async stat(): Promise<RbdImageStat> {
    return {
      size: this.data.size,
      objectSize: this.objectSize,
      numObjects: Math.ceil(this.data.size / this.objectSize),
      order: this.data.order,
    };
  }

  read(offset: number, buffer: Uint8Array): Promise<void> {
    return this.run('read', offset, buffer.length, () => {
      this.counters.reads++;
      this.counters.bytesRead += buffer.length;
      this.pieces(offset, buffer.length, (no, at, pos, n) => {
        this.counters.objectReads++;
        const obj = this.objects.get(no);
        if (obj) buffer.set(obj.subarray(at, at + n), pos);
        else buffer.fill(0, pos, pos + n);
      });
    });
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    // Copied now: the caller may reuse its buffer once the promise settles, not before.
    const copy = data.slice();
    return this.run('write', offset, data.length, () => {
      this.counters.writes++;
      this.counters.bytesWritten += copy.length;
      this.pieces(offset, copy.length, (no, at, pos, n) => {
        this.counters.objectWrites++;
        let obj = this.objects.get(no);
        if (!obj) {
          obj = new Uint8Array(this.objectSize);
          this.objects.set(no, obj);
        }
        obj.set(copy.subarray(pos, pos + n), at);
      });
    });
  }

  discard(offset: number, length: number): Promise<void> {
    return this.run('discard', offset, length, () => {
      this.counters.discards++;
      this.pieces(offset, length, (no, at, _pos, n) => {
        this.counters.objectDiscards++;
        this.zero(no, at, n);
      });
    });
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.run('write-zeroes', offset, length, () => {
      this.counters.writeZeroes++;
      this.pieces(offset, length, (no, at, _pos, n) => {
        this.counters.objectZeroes++;
        this.zero(no, at, n);
      });
    });
  }

  flush(): Promise<void> {
    return this.run('flush', 0, 0, () => {
      this.counters.flushes++;
    });
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatus> {
    const allocated = this.objects.has(Math.floor(offset / this.objectSize));
    let end = offset;
    while (end < offset + length && this.objects.has(Math.floor(end / this.objectSize)) === allocated) {
      end = Math.min(offset + length, (Math.floor(end / this.objectSize) + 1) * this.objectSize);
    }
    return { offset, length: end - offset, data: allocated, zero: !allocated, allocated: true, depth: 0 };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.counters.inFlight > 0) await new Promise<void>((resolve) => (this.idle = resolve));
  }

  /** Settles a request on a later turn, like librbd completing on another thread. */
  private run(op: FakeOp, offset: number, length: number, body: () => void): Promise<void> {
    if (this.closed) return Promise.reject(new BlockError('ECLOSED', `fake rbd ${op}: image is closed`));
    if (op !== 'read' && op !== 'flush' && this.readOnly) {
      return Promise.reject(new BlockError('EROFS', `fake rbd ${op}: image is read-only`, { offset, length }));
    }
    if (offset + length > this.data.size) {
      return Promise.reject(new BlockError('EINVAL', `fake rbd ${op}: ${offset}+${length} is beyond the image end`, { offset, length }));
    }
    const c = this.counters;
    c.inFlight++;
    c.maxInFlight = Math.max(c.maxInFlight, c.inFlight);
    return new Promise<void>((resolve, reject) => {
      this.later(() => {
        c.inFlight--;
        const code = this.failures.get(op);
        if (code) reject(new BlockError(code, `fake rbd ${op} at ${offset}+${length}: injected ${code}`, { offset, length }));
        else {
          body();
          resolve();
        }
        if (c.inFlight === 0 && this.idle) {
          this.idle();
          this.idle = null;
        }
      });
    });
  }

  /** Splits a range at object boundaries: (object number, offset in object, offset in range, length). */
  private pieces(offset: number, length: number, fn: (no: number, at: number, pos: number, n: number) => void): void {
    let pos = 0;
    while (pos < length) {
      const abs = offset + pos;
      const no = Math.floor(abs / this.objectSize);
      const at = abs - no * this.objectSize;
      const n = Math.min(this.objectSize - at, length - pos);
      fn(no, at, pos, n);
      pos += n;
    }
  }

  private zero(no: number, at: number, n: number): void {
    if (n === this.objectSize) this.objects.delete(no);
    else this.objects.get(no)?.fill(0, at, at + n);
  }
}

function checkOrder(order: number): void {
  if (!Number.isInteger(order) || order < 12 || order > 25) {
    throw new BlockError('EINVAL', `order: ${order} must be an integer from 12 to 25 (4 KiB to 32 MiB objects)`, { field: 'order' });
  }
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new BlockError('EINVAL', `size: ${size} must be a non-negative integer`, { field: 'size' });
}

/**
 * In-memory pools, images, snapshots and users. `cluster.open` is an RbdConnector:
 * pass it as the `rbd` driver's `adapter` to test the whole open path without Ceph.
 */
export class FakeRbdCluster {
  private readonly pools = new Map<string, Map<string, ImageData>>();
  private readonly users = new Map<string, string>();
  /** Images opened so far, newest last (to look at their stats). */
  readonly opened: FakeRbdImage[] = [];

  /** @param options `users`: name → key; when given, opens must name a known user and, with `keySecret`, its key. */
  constructor(private readonly options: { users?: Record<string, string>; completion?: 'macrotask' | 'microtask' } = {}) {
    for (const [user, key] of Object.entries(options.users ?? {})) this.users.set(user, key);
  }

  /** Creates a pool (idempotent). */
  createPool(pool: string): void {
    if (!this.pools.has(pool)) this.pools.set(pool, new Map());
  }

  /** Creates an empty image `pool/[namespace/]name`; the pool is created if missing. */
  createImage(pool: string, name: string, size: number, options: { order?: number; namespace?: string } = {}): void {
    const order = options.order ?? 22;
    checkOrder(order);
    checkSize(size);
    this.createPool(pool);
    const key = imageKey(options.namespace ?? '', name);
    const images = this.pools.get(pool)!;
    if (images.has(key)) throw new BlockError('EBUSY', `fake rbd: image '${pool}/${key}' already exists`);
    images.set(key, { size, order, objects: new Map(), snapshots: new Map() });
  }

  /** Freezes the current contents of an image as snapshot `snap`. */
  snapshot(pool: string, name: string, snap: string, namespace = ''): void {
    const data = this.find(pool, namespace, name);
    data.snapshots.set(snap, copyObjects(data.objects));
  }

  /** Opens an image as the rbd driver asks (an RbdConnector). */
  readonly open = async (req: RbdOpenRequest): Promise<RbdImage> => {
    if (this.users.size > 0) {
      const user = req.user ?? 'admin';
      const key = this.users.get(user);
      if (key === undefined || (req.keySecret !== undefined && req.keySecret !== key)) {
        throw new BlockError('EACCES', `fake rbd: the cluster refused client.${user} (wrong key or keyring?)`, { node: req.nodeName });
      }
    }
    const data = this.find(req.pool, req.namespace, req.image);
    let objects = data.objects;
    if (req.snapshot !== undefined) {
      const snap = data.snapshots.get(req.snapshot);
      if (!snap) throw new BlockError('ENOENT', `fake rbd: snapshot '${req.pool}/${req.image}@${req.snapshot}' not found`, { field: 'snapshot' });
      objects = snap;
    }
    const readOnly = req.readOnly || req.snapshot !== undefined;
    const image = new FakeRbdImage({ data, objects, readOnly, completion: this.options.completion });
    this.opened.push(image);
    return image;
  };

  private find(pool: string, namespace: string, name: string): ImageData {
    const images = this.pools.get(pool);
    if (!images) throw new BlockError('ENOENT', `fake rbd: pool '${pool}' does not exist`, { field: 'pool' });
    const data = images.get(imageKey(namespace, name));
    if (!data) throw new BlockError('ENOENT', `fake rbd: image '${pool}/${imageKey(namespace, name)}' not found`, { field: 'image' });
    return data;
  }
}

function imageKey(namespace: string, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}
