// A drive whose storage lives in a worker, used from this thread with the Drive's calls and
// events. What a Drive answers synchronously (stats, limits) is a promise here: the answer is
// in the other thread.
import { EventEmitter } from 'eventemitter3';
import { asBytes, canceledError, describe, isSignal } from '../drive/args.js';
import type { DirtyExtentsOptions } from '../drive/dirty-extents.js';
import type { DriveEvents, IoStatus } from '../drive/events.js';
import type { RequestOptions } from '../drive/request.js';
import type { DriveLimits } from '../drive/throttle-membership.js';
import { type DriveReadableStreamOptions, driveReadableStream } from '../drive/web-stream.js';
import { BlockError } from '../errors.js';
import type { DirtyBitmapInfo, DirtyExtent } from '../node/dirty-bitmap.js';
import type { AddDirtyBitmapOptions } from '../node/dirty-bitmaps.js';
import type { BlockStatus } from '../node/driver.js';
import { mergedExtents } from '../node/extents.js';
import type { DriveStats } from '../stats.js';
import type { ThrottleOptions } from '../throttle/limits.js';
import type { ThrottleQueueStats } from '../throttle/queue.js';
import type { CallBody, WorkerCaller } from './caller.js';
import { isShared } from './endpoint.js';
import { type BitmapMethod, deserializeError, type OpenedDrive, type SerializedError } from './protocol.js';

/** Dirty extents fetched per call while walking a bitmap. */
const EXTENTS_PER_CALL = 1024;

/** A {@link Drive} served by a worker (see {@link connectWorkerLayer}): the same calls and typed events. */
export class WorkerDrive extends EventEmitter<DriveEvents> {
  /** The drive's id in the worker's layer. */
  readonly id: string;
  /** Whether the drive refuses writes. */
  readonly readOnly: boolean;
  private size: number;
  private readonly nodeName: string;
  private state: 'open' | 'closing' | 'closed' = 'open';
  private readonly listened = new Set<string>();
  /** The io-status the worker last reported through events (paused/resumed). */
  private status: IoStatus = 'ok';

  /** @internal */
  constructor(
    private readonly caller: WorkerCaller,
    private readonly handle: number,
    opened: OpenedDrive,
  ) {
    super();
    this.id = opened.id;
    this.readOnly = opened.readOnly;
    this.size = opened.length;
    this.nodeName = opened.nodeName;
    caller.addSink(handle, (event, payload) => this.deliver(event, payload));
    // The size and io-status are kept here, so these events are always followed.
    this.listen('resize');
    this.listen('paused');
    this.listen('resumed');
  }

  /** Size of the drive in bytes. */
  get length(): number {
    return this.size;
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.state !== 'open';
  }

  /** QEMU's io-status of the drive, as the worker last reported it. */
  get ioStatus(): IoStatus {
    return this.status;
  }

  /** Reads `length` bytes (into a new buffer) or fills the given buffer; shared memory is filled in place by the worker. */
  read(offset: number, target: number | Uint8Array | ArrayBuffer | DataView, options?: RequestOptions): Promise<Uint8Array> {
    if (typeof target === 'number') return this.readReply(offset, target, options);
    const bytes = asBytes(target);
    if (bytes === null) return this.refuse('read', offset, `target must be a Uint8Array, Buffer, ArrayBuffer or DataView, not ${describe(target)}`, 'target');
    if (isShared(bytes)) return this.request({ op: 'read', drive: this.handle, offset, length: bytes.length, target: bytes }, options).then(() => bytes);
    return this.readReply(offset, bytes.length, options).then((data) => {
      bytes.set(data);
      this.caller.giveSpare(data.buffer as ArrayBuffer);
      return bytes;
    });
  }

  /** A read whose bytes come back in a buffer moved from the worker; a spare buffer goes the other way for the worker to reuse. */
  private readReply(offset: number, length: number, options: RequestOptions | undefined): Promise<Uint8Array> {
    const spare = this.state === 'open' ? this.caller.takeSpare() : undefined;
    if (spare === undefined) return this.request({ op: 'read', drive: this.handle, offset, length }, options) as Promise<Uint8Array>;
    return this.request({ op: 'read', drive: this.handle, offset, length, spare }, options, [spare]) as Promise<Uint8Array>;
  }

  /** Writes `data` at `offset`; the bytes are copied once (shared memory is not: keep it unchanged until the write settles). */
  write(offset: number, data: Uint8Array | ArrayBuffer | DataView, options?: RequestOptions): Promise<void> {
    const bytes = asBytes(data);
    if (bytes === null) return this.refuse('write', offset, `data must be a Uint8Array, Buffer, ArrayBuffer or DataView, not ${describe(data)}`, 'data');
    if (isShared(bytes)) return this.request({ op: 'write', drive: this.handle, offset, data: bytes }, options) as Promise<void>;
    const copy = bytes.slice();
    return this.request({ op: 'write', drive: this.handle, offset, data: copy }, options, [copy.buffer]) as Promise<void>;
  }

  /** Makes a range read as zeros (throttled as a write). */
  writeZeroes(offset: number, length: number, options?: RequestOptions): Promise<void> {
    return this.request({ op: 'write-zeroes', drive: this.handle, offset, length }, options) as Promise<void>;
  }

  /** Tells the storage a range is no longer used. */
  discard(offset: number, length: number, options?: RequestOptions): Promise<void> {
    return this.request({ op: 'discard', drive: this.handle, offset, length }, options) as Promise<void>;
  }

  /** Makes completed writes durable. */
  flush(options?: RequestOptions): Promise<void> {
    return this.request({ op: 'flush', drive: this.handle }, options) as Promise<void>;
  }

  /** Allocation status of the extent at `offset`. */
  blockStatus(offset: number, length: number): Promise<BlockStatus> {
    return this.request({ op: 'block-status', drive: this.handle, offset, length }, undefined) as Promise<BlockStatus>;
  }

  /** Every extent of a range (default: the whole drive), like `qemu-img map`. */
  blockStatusMap(offset = 0, length = this.length - offset): Promise<BlockStatus[]> {
    return this.request({ op: 'block-status-map', drive: this.handle, offset, length }, undefined) as Promise<BlockStatus[]>;
  }

  /** The extents {@link blockStatusMap} gives, one at a time as a `for await` loop asks for them (see Drive.blockStatusExtents). */
  blockStatusExtents(offset = 0, length = this.length - offset, options?: RequestOptions): AsyncIterableIterator<BlockStatus> {
    const signal = options?.signal;
    const refused = this.state !== 'open' ? new BlockError('ECLOSED', `block-status: drive ${this.id} is ${this.state}`, { node: this.nodeName, offset }) : null;
    return mergedExtents(this, offset, length, signal, this.nodeName, refused);
  }

  /** The guest view as a WHATWG ReadableStream (see Drive.readableStream). */
  readableStream(options?: DriveReadableStreamOptions): ReadableStream<Uint8Array> {
    return driveReadableStream(this, options);
  }

  /** The root node, by name only: the node itself lives in the worker. */
  get node(): { readonly name: string } {
    return { name: this.nodeName };
  }

  /** Starts a dirty bitmap (see Drive.addDirtyBitmap). */
  addDirtyBitmap(name: string, options?: AddDirtyBitmapOptions): Promise<DirtyBitmapInfo> {
    return this.bitmap('add', name, { options }) as Promise<DirtyBitmapInfo>;
  }

  /** Removes a dirty bitmap (from the image too if it is persistent). */
  removeDirtyBitmap(name: string): Promise<void> {
    return this.bitmap('remove', name) as Promise<void>;
  }

  /** Marks every granule of a bitmap clean. */
  clearDirtyBitmap(name: string): Promise<void> {
    return this.bitmap('clear', name) as Promise<void>;
  }

  /** Makes a bitmap record writes again. */
  enableDirtyBitmap(name: string): Promise<void> {
    return this.bitmap('enable', name) as Promise<void>;
  }

  /** Stops a bitmap recording writes (its bits stay). */
  disableDirtyBitmap(name: string): Promise<void> {
    return this.bitmap('disable', name) as Promise<void>;
  }

  /** Adds the dirty bits of the bitmaps named in `sources` to `target`. */
  mergeDirtyBitmaps(target: string, sources: readonly string[]): Promise<void> {
    return this.bitmap('merge', target, { sources: [...sources] }) as Promise<void>;
  }

  /** Every dirty bitmap of the drive: name, granularity, dirty bytes, flags. */
  dirtyBitmaps(): Promise<DirtyBitmapInfo[]> {
    return this.bitmap('list', '') as Promise<DirtyBitmapInfo[]>;
  }

  /** The dirty extents of a bitmap, in order, for `for await` (fetched from the worker a page at a time). */
  async *dirtyExtents(name: string, options: DirtyExtentsOptions = {}): AsyncGenerator<DirtyExtent, void, undefined> {
    let offset = options.offset ?? 0;
    let length = options.length;
    for (;;) {
      const page = (await this.request({ op: 'dirty-extents', drive: this.handle, name, offset, length, max: EXTENTS_PER_CALL }, { signal: options.signal })) as DirtyExtent[];
      for (const extent of page) yield extent;
      const last = page.at(-1);
      if (page.length < EXTENTS_PER_CALL || last === undefined) return;
      const next = last.offset + last.length;
      if (length !== undefined) length -= next - offset;
      offset = next;
    }
  }

  private bitmap(method: BitmapMethod, name: string, extra: { options?: unknown; sources?: string[] } = {}): Promise<unknown> {
    return this.request({ op: 'bitmap', drive: this.handle, method, name, ...extra }, undefined);
  }

  /** Sets or changes the drive's limits (see Drive.setLimits). */
  setLimits(options: ThrottleOptions, rules: { maxBurstLength?: number } = {}): Promise<void> {
    return this.request({ op: 'set-limits', drive: this.handle, limits: options, rules }, undefined) as Promise<void>;
  }

  /** The drive's limits and group, or null when it is not throttled. */
  getLimits(): Promise<DriveLimits | null> {
    return this.request({ op: 'get-limits', drive: this.handle }, undefined) as Promise<DriveLimits | null>;
  }

  /** QEMU query-blockstats counters, plus throttle figures when throttled. */
  stats(): Promise<DriveStats & { throttle?: ThrottleQueueStats }> {
    return this.request({ op: 'stats', drive: this.handle }, undefined) as Promise<DriveStats & { throttle?: ThrottleQueueStats }>;
  }

  /** Retries the requests a `stop` error policy held (see Drive.resume). */
  resume(): Promise<void> {
    return this.request({ op: 'resume', drive: this.handle }, undefined) as Promise<void>;
  }

  /** A drained section: every queued request goes now; resolves when none is in flight. */
  drain(): Promise<void> {
    return this.request({ op: 'drain', drive: this.handle }, undefined) as Promise<void>;
  }

  /** Resizes the drive's disk (see Drive.resize). */
  resize(size: number, options: { shrink?: boolean } = {}): Promise<void> {
    return this.request({ op: 'resize', drive: this.handle, size, shrink: options.shrink === true }, undefined) as Promise<void>;
  }

  /** Closes the drive in the worker once its requests settled; emits `closed`. Safe to call twice. */
  async close(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'closing';
    try {
      await this.caller.call({ op: 'close', drive: this.handle });
    } finally {
      this.markClosed();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The worker's layer closed under the drive. @internal */
  markClosed(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.caller.removeSink(this.handle);
    this.emit('closed');
  }

  override on<E extends EventEmitter.EventNames<DriveEvents>>(event: E, fn: EventEmitter.EventListener<DriveEvents, E>, context?: unknown): this {
    this.listen(event);
    return super.on(event, fn, context);
  }

  override addListener<E extends EventEmitter.EventNames<DriveEvents>>(event: E, fn: EventEmitter.EventListener<DriveEvents, E>, context?: unknown): this {
    return this.on(event, fn, context);
  }

  override once<E extends EventEmitter.EventNames<DriveEvents>>(event: E, fn: EventEmitter.EventListener<DriveEvents, E>, context?: unknown): this {
    this.listen(event);
    return super.once(event, fn, context);
  }

  /** Asks the worker for an event the first time someone listens to it: unobserved events cost nothing there. */
  private listen(event: keyof DriveEvents): void {
    if (event === 'closed' || this.listened.has(event) || this.state !== 'open') return;
    this.listened.add(event);
    this.caller.call({ op: 'listen', drive: this.handle, event }).catch(() => undefined);
  }

  private deliver(event: keyof DriveEvents, payload: unknown): void {
    const p = payload as { error?: SerializedError; newSize?: number; ioStatus?: IoStatus };
    if (event === 'resize' && typeof p.newSize === 'number') this.size = p.newSize;
    if (event === 'paused') this.status = p.ioStatus ?? 'failed';
    if (event === 'resumed') this.status = 'ok';
    const value = p !== null && typeof p === 'object' && p.error !== undefined ? { ...p, error: deserializeError(p.error) } : payload;
    (this.emit as (e: string, v: unknown) => boolean)(event, value);
  }

  private refuse(op: string, offset: number, detail: string, field: string): Promise<never> {
    return Promise.reject(new BlockError('EINVAL', `${op}: ${detail}`, { node: this.id, offset, field }));
  }

  private request(body: CallBody, options: RequestOptions | undefined, transfer?: ArrayBuffer[]): Promise<unknown> {
    const op = (body as { op: string }).op;
    const offset = (body as { offset?: number }).offset ?? 0;
    if (this.state !== 'open') return Promise.reject(new BlockError('ECLOSED', `${op}: drive ${this.id} is ${this.state}`, { node: this.id, offset }));
    const signal = options?.signal;
    if (signal === undefined) return this.caller.call(body, transfer);
    if (!isSignal(signal)) return this.refuse(op, offset, `signal must be an AbortSignal, not ${describe(signal)}`, 'signal');
    if (signal.aborted) return Promise.reject(canceledError(op, offset, signal.reason, this.id));
    const id = this.caller.peekId();
    const abort = () => this.caller.cancel(id);
    signal.addEventListener('abort', abort, { once: true });
    return this.caller.call({ ...body, abortable: true }, transfer).then(
      (value) => {
        signal.removeEventListener('abort', abort);
        return value;
      },
      (e: unknown) => {
        signal.removeEventListener('abort', abort);
        // The worker only knows the abort happened; the reason the caller gave is the cause.
        if (e instanceof BlockError && e.code === 'ECANCELED') throw canceledError(op, offset, signal.reason, this.id);
        throw e;
      },
    );
  }
}
