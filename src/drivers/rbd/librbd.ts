import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import { BlockError, type BlockErrorContext, fromErrno } from '../../errors.js';
import { type RbdImage, type RbdImageStat, type RbdOpenRequest, settlesWithBlockErrors } from './image.js';

/*
 * The real RbdImage: librados.so.2 and librbd.so.1 through koffi.
 *
 * Completions. librbd finishes asynchronous requests on its own threads. koffi 3 can relay a
 * callback from such a thread to the event loop (a thread-safe function), but the librbd
 * thread then blocks until JS has run it: a busy event loop would stall every completion of
 * the image, and the relay does not keep the process alive. Instead each image uses
 * librbd's event-socket notification: rbd_set_image_notification(image, pipe, PIPE) makes
 * librbd queue every finished completion and write one byte to a pipe. The pipe's read end
 * is a net.Socket on the event loop; when it is readable we drain the queue with
 * rbd_poll_io_events and settle the promises, several completions per wake-up. No librbd
 * thread ever waits for JS. (Measured on one 2-CPU machine: the same throughput as koffi
 * callbacks, within noise.)
 *
 * Blocking calls (connect, open, close, shutdown) run on the libuv pool (koffi `.async`);
 * submitting an aio request does not block and is called directly.
 *
 * Buffers. librbd reads into / writes from the caller's memory after rbd_aio_* returned, so
 * each request keeps its Uint8Array referenced until completion, and touching `.buffer`
 * first moves a small on-heap typed array to a fixed off-heap store.
 *
 * 64-bit Linux only: completion handles are passed as uint64_t.
 */

type KoffiModule = typeof import('koffi');
type KoffiFunction = ReturnType<ReturnType<KoffiModule['load']>['func']>;
type Handle = unknown;

const EVENT_TYPE_PIPE = 1;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const POLL_BATCH = 64;
/** Bytes read from the completion pipe at a time (one byte per finished completion). */
const PIPE_READ_BYTES = 64;

interface Api {
  koffi: KoffiModule;
  rados_create2: KoffiFunction;
  rados_conf_read_file: KoffiFunction;
  rados_conf_set: KoffiFunction;
  rados_connect: KoffiFunction;
  rados_shutdown: KoffiFunction;
  rados_ioctx_create: KoffiFunction;
  rados_ioctx_set_namespace: KoffiFunction;
  rados_ioctx_destroy: KoffiFunction;
  rbd_open: KoffiFunction;
  rbd_open_read_only: KoffiFunction;
  rbd_close: KoffiFunction;
  rbd_stat: KoffiFunction;
  rbd_set_image_notification: KoffiFunction;
  rbd_poll_io_events: KoffiFunction;
  rbd_aio_create_completion: KoffiFunction;
  rbd_aio_get_return_value: KoffiFunction;
  rbd_aio_release: KoffiFunction;
  rbd_aio_read: KoffiFunction;
  rbd_aio_write: KoffiFunction;
  rbd_aio_discard: KoffiFunction;
  rbd_aio_flush: KoffiFunction;
  /** Absent in librbd older than 14 (Nautilus). */
  rbd_aio_write_zeroes: KoffiFunction | null;
  pipe2: KoffiFunction;
  close: KoffiFunction;
  infoSize: number;
}

let api: Api | BlockError | undefined;

const INSTALL_HINT = 'install Ceph client libraries (Debian/Ubuntu: apt-get install librados2 librbd1)';

function loadLibrary(koffi: KoffiModule, file: string): ReturnType<KoffiModule['load']> {
  try {
    return koffi.load(file);
  } catch (e) {
    throw new BlockError('ENOTSUP', `rbd: ${file} could not be loaded; ${INSTALL_HINT}: ${(e as Error).message}`, {
      path: file,
      cause: e,
    });
  }
}

/** Loads koffi, librados, librbd and libc on first use; the failure, if any, is kept and rethrown. */
function load(): Api {
  if (api instanceof BlockError) throw api;
  if (api) return api;
  try {
    const require = createRequire(import.meta.url);
    let koffi: KoffiModule;
    try {
      koffi = require('koffi') as KoffiModule;
    } catch (e) {
      throw new BlockError('ENOTSUP', `rbd: the koffi package could not be loaded: ${(e as Error).message}`, { cause: e });
    }
    // BLOCKLAYER_LIBRADOS / BLOCKLAYER_LIBRBD: other file names or paths (non-standard installs).
    const rados = loadLibrary(koffi, process.env.BLOCKLAYER_LIBRADOS || 'librados.so.2');
    const rbd = loadLibrary(koffi, process.env.BLOCKLAYER_LIBRBD || 'librbd.so.1');
    const libc = loadLibrary(koffi, 'libc.so.6');
    // Anonymous: koffi's type names are process-wide and this module may be loaded twice.
    const info = koffi.struct({
      size: 'uint64_t',
      obj_size: 'uint64_t',
      num_objs: 'uint64_t',
      order: 'int',
      block_name_prefix: koffi.array('char', 24, 'Array'),
      parent_pool: 'int64_t',
      parent_name: koffi.array('char', 96, 'Array'),
    });
    let writeZeroes: KoffiFunction | null = null;
    try {
      writeZeroes = rbd.func(
        'int rbd_aio_write_zeroes(void *image, uint64_t off, size_t len, uint64_t c, int zero_flags, int op_flags)',
      );
    } catch {
      writeZeroes = null;
    }
    api = {
      koffi,
      rados_create2: rados.func('int rados_create2(_Out_ void **cluster, const char *cluster_name, const char *name, uint64_t flags)'),
      rados_conf_read_file: rados.func('int rados_conf_read_file(void *cluster, const char *path)'),
      rados_conf_set: rados.func('int rados_conf_set(void *cluster, const char *option, const char *value)'),
      rados_connect: rados.func('int rados_connect(void *cluster)'),
      rados_shutdown: rados.func('void rados_shutdown(void *cluster)'),
      rados_ioctx_create: rados.func('int rados_ioctx_create(void *cluster, const char *pool, _Out_ void **io)'),
      rados_ioctx_set_namespace: rados.func('void rados_ioctx_set_namespace(void *io, const char *nspace)'),
      rados_ioctx_destroy: rados.func('void rados_ioctx_destroy(void *io)'),
      rbd_open: rbd.func('int rbd_open(void *io, const char *name, _Out_ void **image, const char *snap)'),
      rbd_open_read_only: rbd.func('int rbd_open_read_only(void *io, const char *name, _Out_ void **image, const char *snap)'),
      rbd_close: rbd.func('int rbd_close(void *image)'),
      rbd_stat: rbd.func('rbd_stat', 'int', ['void *', koffi.out(koffi.pointer(info)), 'size_t']),
      rbd_set_image_notification: rbd.func('int rbd_set_image_notification(void *image, int fd, int type)'),
      rbd_poll_io_events: rbd.func('int rbd_poll_io_events(void *image, _Out_ uint64_t *comps, int numcomp)'),
      rbd_aio_create_completion: rbd.func('int rbd_aio_create_completion(intptr_t arg, void *cb, _Out_ uint64_t *c)'),
      rbd_aio_get_return_value: rbd.func('intptr_t rbd_aio_get_return_value(uint64_t c)'),
      rbd_aio_release: rbd.func('void rbd_aio_release(uint64_t c)'),
      rbd_aio_read: rbd.func('int rbd_aio_read(void *image, uint64_t off, size_t len, void *buf, uint64_t c)'),
      rbd_aio_write: rbd.func('int rbd_aio_write(void *image, uint64_t off, size_t len, void *buf, uint64_t c)'),
      rbd_aio_discard: rbd.func('int rbd_aio_discard(void *image, uint64_t off, uint64_t len, uint64_t c)'),
      rbd_aio_flush: rbd.func('int rbd_aio_flush(void *image, uint64_t c)'),
      rbd_aio_write_zeroes: writeZeroes,
      pipe2: libc.func('int pipe2(_Out_ int *fds, int flags)'),
      close: libc.func('int close(int fd)'),
      infoSize: koffi.sizeof(info),
    };
    return api;
  } catch (e) {
    api = e instanceof BlockError ? e : new BlockError('ENOTSUP', `rbd: librbd is unusable: ${(e as Error).message}`, { cause: e });
    throw api;
  }
}

const ERRNO_NAMES = new Map<number, string>(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

/** A negative errno from librados/librbd as a BlockError (code via the errno name). */
function rbdError(ret: number, what: string, context: BlockErrorContext = {}): BlockError {
  const errno = ERRNO_NAMES.get(-ret) ?? `errno ${-ret}`;
  const cause = Object.assign(new Error(`${errno} (${ret})`), { code: errno, errno: ret });
  return fromErrno(cause, what, context);
}

/** Runs a blocking librados/librbd call on the libuv pool. */
function offThread(fn: KoffiFunction, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, ret: unknown) => (err ? reject(err) : resolve(Number(ret ?? 0))));
  });
}

const OP_READ = 0;
const OP_WRITE = 1;
const OP_DISCARD = 2;
const OP_FLUSH = 3;
const OP_WRITE_ZEROES = 4;
const OP_NAMES = ['read', 'write', 'discard', 'flush', 'write-zeroes'];
const TWO_32 = 2 ** 32;

/** One request in flight (one class, so every entry has the same shape). */
class Pending {
  constructor(
    readonly resolve: () => void,
    readonly reject: (e: BlockError) => void,
    readonly op: number,
    readonly offset: number,
    readonly length: number,
    /** Keeps the caller's memory alive until librbd is done with it. */
    readonly buffer: Uint8Array | null,
  ) {}
}

// A promise's resolve/reject taken out by one shared executor: no closure per request.
const unset = (): void => undefined;
let capturedResolve: () => void = unset;
let capturedReject: (e: BlockError) => void = unset;
function capture(resolve: () => void, reject: (e: BlockError) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/** Opens an image through librados/librbd (the default connector of the `rbd` driver). */
export async function openLibrbdImage(req: RbdOpenRequest): Promise<RbdImage> {
  const f = load();
  const user = req.user ?? 'admin';
  const where = `${req.pool}/${req.namespace ? `${req.namespace}/` : ''}${req.image}${req.snapshot ? `@${req.snapshot}` : ''}`;
  const ctx = { node: req.nodeName, path: where };
  const out: Handle[] = [null];
  let ret = f.rados_create2(out, req.cluster ?? 'ceph', `client.${user}`, 0) as number;
  if (ret < 0) throw rbdError(ret, `rbd: could not create a cluster handle for client.${user}`, ctx);
  const cluster = out[0];
  let io: Handle = null;
  let image: Handle = null;
  try {
    ret = f.rados_conf_read_file(cluster, req.conf ?? null) as number;
    // Without an explicit conf, a missing default file is fine (settings may come from `config`).
    if (ret < 0 && (req.conf !== undefined || ret !== -os.constants.errno.ENOENT)) {
      throw rbdError(ret, `rbd: could not read the Ceph configuration '${req.conf ?? 'default search path'}'`, {
        ...ctx,
        field: 'conf',
      });
    }
    const settings: [string, string, string][] = [];
    if (req.keyring !== undefined) settings.push(['keyring', req.keyring, 'keyring']);
    if (req.keySecret !== undefined) settings.push(['key', req.keySecret, 'keySecret']);
    for (const [k, v] of Object.entries(req.config)) settings.push([k, v, `config.${k}`]);
    for (const [k, v, field] of settings) {
      ret = f.rados_conf_set(cluster, k, v) as number;
      if (ret < 0) throw rbdError(ret, `rbd: could not set Ceph option '${k}'`, { ...ctx, field });
    }
    ret = await offThread(f.rados_connect, cluster);
    if (ret < 0) {
      const auth = ret === -os.constants.errno.EACCES || ret === -os.constants.errno.EPERM;
      throw rbdError(
        ret,
        auth
          ? `rbd: the cluster refused client.${user} (wrong key or keyring?)`
          : `rbd: could not connect to the Ceph cluster as client.${user}`,
        ctx,
      );
    }
    const ioOut: Handle[] = [null];
    ret = await offThread(f.rados_ioctx_create, cluster, req.pool, ioOut);
    if (ret < 0) {
      throw rbdError(ret, ret === -os.constants.errno.ENOENT ? `rbd: pool '${req.pool}' does not exist` : `rbd: could not use pool '${req.pool}'`, {
        ...ctx,
        field: 'pool',
      });
    }
    io = ioOut[0];
    if (req.namespace) f.rados_ioctx_set_namespace(io, req.namespace);
    const imgOut: Handle[] = [null];
    ret = await offThread(req.readOnly ? f.rbd_open_read_only : f.rbd_open, io, req.image, imgOut, req.snapshot ?? null);
    if (ret < 0) {
      const missing = ret === -os.constants.errno.ENOENT;
      throw rbdError(
        ret,
        missing
          ? req.snapshot
            ? `rbd: image '${where}' not found (no such image or snapshot)`
            : `rbd: image '${where}' not found`
          : `rbd: could not open image '${where}'`,
        { ...ctx, field: missing && req.snapshot ? 'snapshot' : 'image' },
      );
    }
    image = imgOut[0];
    const info: Record<string, unknown> = {};
    ret = f.rbd_stat(image, info, f.infoSize) as number;
    if (ret < 0) throw rbdError(ret, `rbd: could not stat image '${where}'`, ctx);
    const stat: RbdImageStat = {
      size: Number(info.size),
      objectSize: Number(info.obj_size),
      numObjects: Number(info.num_objs),
      order: Number(info.order),
    };
    if (!Number.isSafeInteger(stat.size)) throw new BlockError('ENOTSUP', `rbd: image '${where}' is larger than 2^53 bytes`, ctx);
    const fds = new Int32Array(2);
    if ((f.pipe2(fds, O_NONBLOCK | O_CLOEXEC) as number) < 0) throw new BlockError('EIO', 'rbd: pipe2 failed', ctx);
    ret = f.rbd_set_image_notification(image, fds[1], EVENT_TYPE_PIPE) as number;
    if (ret < 0) {
      f.close(fds[0]);
      f.close(fds[1]);
      throw rbdError(ret, `rbd: could not set up completion notification for '${where}'`, ctx);
    }
    return new LibrbdImage(f, cluster, io, image, stat, fds[0], fds[1], where, req.nodeName);
  } catch (e) {
    if (image !== null) await offThread(f.rbd_close, image).catch(() => undefined);
    if (io !== null) f.rados_ioctx_destroy(io);
    await offThread(f.rados_shutdown, cluster).catch(() => undefined);
    throw e;
  }
}

class LibrbdImage implements RbdImage {
  /** Its rejections are complete BlockErrors already: the driver passes its promises on as they are. */
  readonly [settlesWithBlockErrors] = true;
  /** Requests in flight by completion address (a Number: user-space addresses are below 2^53). */
  private readonly pending = new Map<number, Pending>();
  // Completion handles come back as uint64 words; read as two uint32 halves to stay clear of BigInt.
  private readonly out = new BigUint64Array(1);
  private readonly outWords = new Uint32Array(this.out.buffer);
  private readonly comps = new BigUint64Array(POLL_BATCH);
  private readonly compWords = new Uint32Array(this.comps.buffer);
  private readonly events: net.Socket;
  private drained: (() => void) | null = null;
  private closing: Promise<void> | null = null;
  private readonly orphans: Uint8Array[] = [];
  writeZeroes?: (offset: number, length: number) => Promise<void>;

  constructor(
    private readonly f: Api,
    private readonly cluster: Handle,
    private readonly io: Handle,
    private readonly image: Handle,
    private readonly info: RbdImageStat,
    readFd: number,
    private readonly writeFd: number,
    private readonly where: string,
    private readonly nodeName: string,
  ) {
    // The pipe's bytes only say "completions are queued": read them into one small buffer of
    // our own (net's `onread` mode), with no Buffer, stream chunk or 'data' event per wake-up.
    // (The constructor takes `onread` as connect() does; @types/node lists it for connect only.)
    const options: net.SocketConstructorOpts & net.ConnectOpts = {
      fd: readFd,
      readable: true,
      writable: false,
      onread: { buffer: new Uint8Array(PIPE_READ_BYTES), callback: () => this.reap() },
    };
    this.events = new net.Socket(options);
    this.events.on('error', (e) => this.failAll(new BlockError('EIO', `rbd: completion pipe of '${where}' failed: ${e.message}`, { cause: e })));
    // An idle image does not keep the process alive; requests in flight do.
    this.events.unref();
    if (f.rbd_aio_write_zeroes) this.writeZeroes = (offset, length) => this.submit(OP_WRITE_ZEROES, offset, length, null);
  }

  async size(): Promise<number> {
    return this.info.size;
  }

  async stat(): Promise<RbdImageStat> {
    return { ...this.info };
  }

  read(offset: number, buffer: Uint8Array): Promise<void> {
    void buffer.buffer;
    return this.submit(OP_READ, offset, buffer.length, buffer);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    void data.buffer;
    return this.submit(OP_WRITE, offset, data.length, data);
  }

  discard(offset: number, length: number): Promise<void> {
    return this.submit(OP_DISCARD, offset, length, null);
  }

  flush(): Promise<void> {
    return this.submit(OP_FLUSH, 0, 0, null);
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.pending.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    const ret = await offThread(this.f.rbd_close, this.image);
    this.events.destroy();
    this.f.close(this.writeFd);
    this.f.rados_ioctx_destroy(this.io);
    await offThread(this.f.rados_shutdown, this.cluster);
    if (ret < 0) throw rbdError(ret, `rbd: closing image '${this.where}' failed`, { node: this.nodeName, path: this.where });
  }

  /** Creates a completion, starts the request, and leaves it to the pipe to settle (keyed by the completion's address). */
  private submit(op: number, offset: number, length: number, buffer: Uint8Array | null): Promise<void> {
    if (this.closing) {
      return Promise.reject(new BlockError('ECLOSED', `rbd ${OP_NAMES[op]}: image '${this.where}' is closed`, { node: this.nodeName, path: this.where }));
    }
    const promise = new Promise<void>(capture);
    const resolve = capturedResolve;
    const reject = capturedReject;
    const f = this.f;
    let c = -1;
    try {
      let ret = f.rbd_aio_create_completion(0, null, this.out) as number;
      if (ret < 0) {
        reject(rbdError(ret, `rbd ${OP_NAMES[op]}: could not create a completion`, { node: this.nodeName }));
        return promise;
      }
      c = this.outWords[0] + this.outWords[1] * TWO_32;
      if (this.pending.size === 0) this.events.ref();
      this.pending.set(c, new Pending(resolve, reject, op, offset, length, buffer));
      ret = this.start(op, offset, length, buffer, c);
      if (ret < 0) {
        f.rbd_aio_release(c);
        this.settled(c);
        reject(this.requestError(ret, op, offset, length));
      }
    } catch (e) {
      // A call that threw (a bad argument) never reached librbd: nothing will complete it.
      if (c !== -1) {
        f.rbd_aio_release(c);
        this.settled(c);
      }
      reject(
        fromErrno(e, `rbd ${OP_NAMES[op]} at ${offset}+${length} on '${this.where}'`, { node: this.nodeName, path: this.where, offset, length }),
      );
    }
    return promise;
  }

  private start(op: number, offset: number, length: number, buffer: Uint8Array | null, c: number): number {
    const f = this.f;
    switch (op) {
      case OP_READ:
        return f.rbd_aio_read(this.image, offset, length, buffer, c) as number;
      case OP_WRITE:
        return f.rbd_aio_write(this.image, offset, length, buffer, c) as number;
      case OP_DISCARD:
        return f.rbd_aio_discard(this.image, offset, length, c) as number;
      case OP_FLUSH:
        return f.rbd_aio_flush(this.image, c) as number;
      default:
        return (f.rbd_aio_write_zeroes as KoffiFunction)(this.image, offset, length, c, 0, 0) as number;
    }
  }

  /** Drains librbd's queue of finished completions (called when the pipe has bytes); true: keep reading the pipe. */
  private reap(): true {
    const f = this.f;
    const words = this.compWords;
    for (;;) {
      const n = f.rbd_poll_io_events(this.image, this.comps, POLL_BATCH) as number;
      if (n <= 0) return true;
      for (let i = 0; i < n; i++) {
        const c = words[2 * i] + words[2 * i + 1] * TWO_32;
        const ret = Number(f.rbd_aio_get_return_value(c));
        f.rbd_aio_release(c);
        const p = this.pending.get(c);
        if (p === undefined) continue;
        this.settled(c);
        if (ret < 0) p.reject(this.requestError(ret, p.op, p.offset, p.length));
        else p.resolve();
      }
      if (n < POLL_BATCH) return true;
    }
  }

  private settled(c: number): void {
    this.pending.delete(c);
    if (this.pending.size > 0) return;
    this.events.unref();
    if (this.drained) {
      const done = this.drained;
      this.drained = null;
      done();
    }
  }

  private requestError(ret: number, op: number, offset: number, length: number): BlockError {
    return rbdError(ret, `rbd ${OP_NAMES[op]} at ${offset}+${length} on '${this.where}'`, {
      node: this.nodeName,
      path: this.where,
      offset,
      length,
    });
  }

  private failAll(e: BlockError): void {
    // librbd may still use the buffers of these requests: they stay referenced for good.
    for (const [c, p] of [...this.pending]) {
      if (p.buffer) this.orphans.push(p.buffer);
      this.settled(c);
      p.reject(e);
    }
  }
}
