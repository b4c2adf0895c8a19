/**
 * A blocklayer drive as a v86 disk (`hda`, `hdb`, `cdrom`, `fda`): the object v86's starter
 * accepts as-is because it has `get`, `set` and `load` (v86 then never wraps it in its own buffers).
 *
 * The contract, read from v86's own buffers (SyncBuffer, AsyncXHRBuffer, AsyncFileBuffer):
 * - `byteLength` is the disk size; `load()` calls `onload` once the disk is usable. v86's starter
 *   calls `load()` only once its wasm is compiled and its BIOS fetched, and reads `byteLength` only
 *   after `onload`: a disk made from a drive still opening (a promise) lets the open overlap v86's
 *   own start-up, as v86's async http disk learns its size in its `load()`.
 * - `get(offset, len, fn, { signal })` calls `fn(Uint8Array)` with `len` bytes; synchronously when
 *   the bytes are cached. The IDE passes an AbortSignal and ignores the answer once it aborted.
 * - `set(offset, data, fn)`: `data` may be a view of guest memory, so it is copied before the call
 *   returns. PIO writes pass a no-op `fn` (the guest moves on at once); DMA writes raise the guest's
 *   interrupt from `fn`, so `fn` runs only once the drive has the data (write-through).
 * - `get_and_cache` before boot caches sector 0; the IDE's geometry probe then reads it back
 *   synchronously with `get_from_cache` (without it v86 guesses the geometry from the size).
 * - `get_state`/`set_state` go into v86 state snapshots; `get_buffer(fn)` hands over the whole disk
 *   (v86's own async buffers answer `fn()` — nothing — and so does this one above `maxBufferBytes`).
 *
 * Read-ahead (option `readahead`, off by default): a read shorter than it fetches the aligned chunk of
 * that many bytes around it and keeps it, as v86's own http disk does with its `fixed_chunk_size`, so
 * the guest's next reads nearby are answered synchronously instead of costing a round trip each (a
 * WorkerDrive's reply crosses two threads). The disk's own writes patch the chunks, so they stay
 * right as long as nothing else writes the drive meanwhile.
 *
 * Failed requests: v86's own async buffers never call back on a failed read (the browser retries,
 * Node leaves a rejected promise), so the guest's disk command times out. This adapter does the same
 * — the guest sees a timeout, never zeros posing as data, never a write reported as done — and emits
 * `io-error` with the operation, range and BlockError. It creates no unhandled rejection.
 *
 * Imports nothing from `node:`: it goes in browser builds.
 */
import { EventEmitter } from 'eventemitter3';
import type { Drive } from '../drive.js';
import { BlockError, isBlockError } from '../errors.js';

/** v86 caches in blocks of this many bytes (its smallest transfer). */
const CACHE_BLOCK = 256;
/** Read-ahead chunks kept (the least recently used goes first). */
const READAHEAD_CHUNKS = 32;

/** Options of {@link V86Disk}. */
export interface V86DiskOptions {
  /** Largest disk `get_buffer` reads whole into memory (default 256 MiB); above it, `fn()` gets nothing. */
  maxBufferBytes?: number;
  /**
   * Bytes of read-ahead (a multiple of 256; default 0, off): a read shorter than this fetches the
   * aligned chunk around it and later reads inside it answer at once, from memory (the last 32
   * chunks are kept). Assumes the disk is the drive's only writer while it is used.
   */
  readahead?: number;
}

/** Payload of the `io-error` event. */
export interface V86DiskErrorEvent {
  /** The v86 request that failed. */
  operation: 'open' | 'read' | 'write' | 'get-buffer' | 'flush';
  /** Byte offset of the request. */
  offset: number;
  /** Byte length of the request. */
  length: number;
  /** Why it failed. */
  error: BlockError;
}

/** Events of a {@link V86Disk}. */
export interface V86DiskEvents {
  /** A request of v86 failed: its callback will not run (see the module comment). */
  'io-error': (event: V86DiskErrorEvent) => void;
}

/** The options v86 passes to `get` (the IDE aborts reads when the guest resets the controller). */
export interface V86GetOptions {
  /** Aborted when v86 no longer wants the answer. */
  signal?: AbortSignal;
}

/** A write handed to the drive and not settled yet: reads issued meanwhile see its data. */
interface PendingWrite {
  offset: number;
  data: Uint8Array;
  settled: Promise<void>;
}

/** A `get_and_cache` read in flight: writes issued meanwhile patch what it caches. */
interface CacheFill {
  offset: number;
  length: number;
  laterWrites: PendingWrite[];
}

/** One chunk of the read-ahead cache: its bytes once read (writes of the disk applied), and the read in flight until then. */
interface Chunk {
  data: Uint8Array | undefined;
  ready: Promise<Uint8Array>;
}

const overlaps = (aOffset: number, aLength: number, bOffset: number, bLength: number) => aOffset < bOffset + bLength && bOffset < aOffset + aLength;

/** Copies the part of `w` that falls in `[offset, offset + target.length)` into `target`. */
function applyWrite(target: Uint8Array, offset: number, w: { offset: number; data: Uint8Array }): void {
  const from = Math.max(offset, w.offset);
  const to = Math.min(offset + target.length, w.offset + w.data.length);
  if (from < to) target.set(w.data.subarray(from - w.offset, to - w.offset), from - offset);
}

/** A plain Uint8Array over the same bytes: drives may answer with a Node Buffer, whose `slice` is a view, not a copy. */
const plain = (data: Uint8Array) => (data.constructor === Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength));

function toBlockError(e: unknown, operation: string, offset: number): BlockError {
  if (isBlockError(e)) return e;
  return new BlockError('EIO', `v86 ${operation} at offset ${offset}: ${e instanceof Error ? e.message : String(e)}`, { offset });
}

/** Runs v86's callback outside our promise chains: if it throws, that surfaces as v86's error, not as an unhandled rejection. */
function callBack<T extends unknown[]>(fn: (...args: T) => void, ...args: T): void {
  try {
    fn(...args);
  } catch (e) {
    queueMicrotask(() => {
      throw e;
    });
  }
}

const isPromiseLike = (x: unknown): x is PromiseLike<V86DiskDrive> => typeof (x as { then?: unknown }).then === 'function';

/** What the disk needs of a drive: a {@link Drive}, or a WorkerDrive whose storage lives in a worker. */
export type V86DiskDrive = Pick<Drive, 'id' | 'length' | 'read' | 'write' | 'flush'>;

/** A {@link Drive} as a v86 disk image (`hda`, `hdb`, `cdrom`, `fda`); see the module comment for v86's contract. */
export class V86Disk extends EventEmitter<V86DiskEvents> {
  /** Disk size in bytes (v86 reads it once, when the disk is attached, after {@link load}); 0 while the drive is still opening. */
  byteLength: number;
  /** Set by v86 before it calls {@link load}. */
  onload: ((event: object) => void) | undefined = undefined;
  /** Set by v86 to follow a download; never called. */
  onprogress: ((event: object) => void) | undefined = undefined;
  /** Settles once the drive is open: with it, or with the open's error (also emitted as `io-error` when v86 waits for it in {@link load}). */
  readonly opened: Promise<V86DiskDrive>;

  private readonly cache = new Map<number, Uint8Array>();
  private readonly pending: PendingWrite[] = [];
  private readonly fills = new Set<CacheFill>();
  private readonly maxBufferBytes: number;
  private readonly readahead: number;
  /** Read-ahead chunks by index (offset / readahead), least recently used first. */
  private readonly chunks = new Map<number, Chunk>();
  private openDrive: V86DiskDrive | undefined;

  constructor(
    /** The drive whose bytes the disk serves, or a drive still opening. */
    drive: V86DiskDrive | PromiseLike<V86DiskDrive>,
    options: V86DiskOptions = {},
  ) {
    super();
    this.maxBufferBytes = options.maxBufferBytes ?? 256 * 1024 * 1024;
    const readahead = options.readahead ?? 0;
    if (!Number.isSafeInteger(readahead) || readahead < 0 || readahead % CACHE_BLOCK !== 0) {
      throw new BlockError('EINVAL', `v86 disk: readahead must be 0 or a positive multiple of ${CACHE_BLOCK} bytes, not ${String(readahead)}`, { field: 'readahead' });
    }
    this.readahead = readahead;
    if (isPromiseLike(drive)) {
      this.byteLength = 0;
      this.opened = Promise.resolve(drive).then((d) => this.attach(d));
      // its failure reaches whoever awaits `opened`, and v86's load() as an io-error: never unhandled meanwhile
      this.opened.catch(() => undefined);
    } else {
      this.byteLength = drive.length;
      this.openDrive = drive;
      this.opened = Promise.resolve(drive);
    }
  }

  /** The drive whose bytes the disk serves (EBUSY while it is still opening: await {@link opened}). */
  get drive(): V86DiskDrive {
    if (this.openDrive === undefined) throw new BlockError('EBUSY', 'v86 disk: the drive is still opening (await disk.opened)');
    return this.openDrive;
  }

  /**
   * `blocklayer:<drive id>`, a name v86 never fetches. v86's typings know disk images only as
   * `{ url }` or `{ buffer }`, while its starter takes an object with `get`, `set` and `load` as-is
   * (before it looks at `url`): with this the disk passes as `hda`, `hdb`, `cdrom` or `fda` without
   * a cast. v86's `set_cdrom`/`set_fda` (swapping media later) take no such objects.
   */
  get url(): string {
    return `blocklayer:${this.openDrive?.id ?? 'opening'}`;
  }

  /** Calls `onload` once the drive is open: at once when it already is. A failed open is an `io-error` (v86 then waits forever, as for a disk it cannot load). */
  load(): void {
    if (this.openDrive !== undefined) {
      this.onload?.(Object.create(null));
      return;
    }
    this.opened.then(
      () => this.onload?.(Object.create(null)),
      (e: unknown) => this.emit('io-error', { operation: 'open', offset: 0, length: 0, error: toBlockError(e, 'open', 0) }),
    );
  }

  private attach(drive: V86DiskDrive): V86DiskDrive {
    this.openDrive = drive;
    this.byteLength = drive.length;
    return drive;
  }

  /** Calls `fn` with `len` bytes at `offset`: at once from the cache, else when the drive answers. */
  get(offset: number, len: number, fn: (data: Uint8Array) => void, options?: V86GetOptions): void {
    const cached = this.get_from_cache(offset, len);
    if (cached !== undefined) {
      callBack(fn, cached);
      return;
    }
    if (len > 0 && len < this.readahead && offset >= 0 && offset + len <= this.byteLength) {
      this.readAhead(offset, len, options?.signal, fn);
      return;
    }
    this.readThrough(offset, len, options?.signal, (data) => callBack(fn, data));
  }

  /** Like {@link get}, and keeps the bytes so {@link get_from_cache} can answer synchronously. */
  get_and_cache(offset: number, len: number, fn: (data: Uint8Array) => void, options?: V86GetOptions): void {
    const cached = this.get_from_cache(offset, len);
    if (cached !== undefined) {
      callBack(fn, cached);
      return;
    }
    if (len > 0 && len < this.readahead && offset >= 0 && offset + len <= this.byteLength) {
      // the chunks have the disk's writes applied already
      this.readAhead(offset, len, options?.signal, (data) => {
        this.storeInCache(offset, data, []);
        fn(data);
      });
      return;
    }
    const fill: CacheFill = { offset, length: len, laterWrites: [] };
    this.fills.add(fill);
    this.readThrough(
      offset,
      len,
      options?.signal,
      (data) => {
        this.fills.delete(fill);
        this.storeInCache(offset, data, fill.laterWrites);
        callBack(fn, data);
      },
      () => this.fills.delete(fill),
    );
  }

  /** The cached bytes at `offset` (a copy), or undefined unless every one of them is cached. */
  get_from_cache(offset: number, len: number): Uint8Array | undefined {
    if (len <= 0 || this.cache.size === 0) return undefined;
    const first = Math.floor(offset / CACHE_BLOCK);
    const end = Math.ceil((offset + len) / CACHE_BLOCK);
    for (let b = first; b < end; b++) if (!this.cache.has(b)) return undefined;
    const out = new Uint8Array((end - first) * CACHE_BLOCK);
    for (let b = first; b < end; b++) {
      const block = this.cache.get(b);
      if (block === undefined) return undefined;
      out.set(block, (b - first) * CACHE_BLOCK);
    }
    const skip = offset - first * CACHE_BLOCK;
    return skip === 0 && out.length === len ? out : out.slice(skip, skip + len);
  }

  /** Writes a copy of `data` at `offset`; `fn` runs once the drive has it. */
  set(offset: number, data: Uint8Array, fn: () => void): void {
    // v86 may hand a view of guest memory that changes as soon as we return.
    const copy = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
    for (const [b, block] of this.cache) applyWrite(block, b * CACHE_BLOCK, { offset, data: copy });
    if (this.readahead > 0) this.patchChunks(offset, copy);
    const earlier = this.pending.filter((w) => overlaps(w.offset, w.data.length, offset, copy.length)).map((w) => w.settled);
    const entry: PendingWrite = { offset, data: copy, settled: Promise.resolve() };
    for (const fill of this.fills) if (overlaps(fill.offset, fill.length, offset, copy.length)) fill.laterWrites.push(entry);
    // Overlapping writes reach the drive in the order v86 issued them.
    const start = earlier.length === 0 ? Promise.resolve() : Promise.all(earlier);
    entry.settled = start
      .then(() => this.drive.write(offset, copy))
      .then(
        () => {
          this.forget(entry);
          callBack(fn);
        },
        (e: unknown) => {
          this.forget(entry);
          // the chunks hold bytes the drive did not take: the next reads there ask the drive again
          if (this.readahead > 0) this.dropChunks(offset, copy.length);
          this.emit('io-error', { operation: 'write', offset, length: copy.length, error: toBlockError(e, 'write', offset) });
        },
      );
    this.pending.push(entry);
  }

  /** Hands the whole disk to `fn` (with writes still in flight applied), or nothing above `maxBufferBytes` or on error. */
  get_buffer(fn: (buffer?: ArrayBuffer) => void): void {
    if (this.byteLength > this.maxBufferBytes) {
      callBack(fn);
      return;
    }
    const snapshot = this.pending.slice();
    this.drive.read(0, this.byteLength).then(
      (answer) => {
        const data = plain(answer);
        for (const w of snapshot) applyWrite(data, 0, w);
        const buffer = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data.buffer : data.slice().buffer;
        callBack(fn, buffer as ArrayBuffer);
      },
      (e: unknown) => {
        this.emit('io-error', { operation: 'get-buffer', offset: 0, length: this.byteLength, error: toBlockError(e, 'get_buffer', 0) });
        callBack(fn);
      },
    );
  }

  /**
   * What goes in a v86 snapshot: the cached blocks (so the geometry probe works after a restore, which
   * skips the boot-time `get_and_cache`). The disk's data lives in the drive, not in the snapshot.
   */
  get_state(): [Array<[number, Uint8Array]>] {
    return [[...this.cache].map(([b, block]) => [b, block.slice()])];
  }

  /** Restores the cached blocks from a v86 snapshot made by {@link get_state}. */
  set_state(state: unknown): void {
    const entries = Array.isArray(state) ? state[0] : undefined;
    if (!Array.isArray(entries)) throw new BlockError('EINVAL', 'v86 disk state: expected [[blockIndex, Uint8Array], …] at state[0]', { field: 'state' });
    const restored = new Map<number, Uint8Array>();
    for (const entry of entries) {
      const [b, block] = Array.isArray(entry) ? entry : [];
      if (!Number.isSafeInteger(b) || b < 0 || !(block instanceof Uint8Array) || block.length !== CACHE_BLOCK) {
        throw new BlockError('EINVAL', `v86 disk state: bad cache entry for block ${String(b)}`, { field: 'state' });
      }
      restored.set(b as number, block.slice());
    }
    this.cache.clear();
    for (const [b, block] of restored) this.cache.set(b, block);
  }

  /** Writes handed over by `set` and not settled yet. */
  get pendingWrites(): number {
    return this.pending.length;
  }

  /** Resolves once every write handed over so far has settled and the drive has flushed. */
  async flush(): Promise<void> {
    await Promise.all(this.pending.map((w) => w.settled));
    try {
      await (this.openDrive ?? (await this.opened)).flush();
    } catch (e) {
      const error = toBlockError(e, 'flush', 0);
      this.emit('io-error', { operation: 'flush', offset: 0, length: 0, error });
      throw error;
    }
  }

  /** Reads through the drive, with writes still in flight applied; failures become `io-error` events. */
  private readThrough(offset: number, len: number, signal: AbortSignal | undefined, done: (data: Uint8Array) => void, failed?: () => void): void {
    const inFlight = this.pending.filter((w) => overlaps(w.offset, w.data.length, offset, len));
    this.drive.read(offset, len, signal === undefined ? undefined : { signal }).then(
      (answer) => {
        const data = plain(answer);
        for (const w of inFlight) applyWrite(data, offset, w);
        done(data);
      },
      (e: unknown) => {
        failed?.();
        // v86 aborted it and ignores the answer: nothing went wrong.
        if (signal?.aborted && isBlockError(e, 'ECANCELED')) return;
        this.emit('io-error', { operation: 'read', offset, length: len, error: toBlockError(e, 'read', offset) });
      },
    );
  }

  /**
   * Answers a read shorter than the read-ahead from its chunks: synchronously when they are in
   * memory, else once their reads (started here if needed) are done. A failed chunk is an io-error
   * of this read; a read v86 aborted meanwhile is dropped.
   */
  private readAhead(offset: number, len: number, signal: AbortSignal | undefined, fn: (data: Uint8Array) => void): void {
    const size = this.readahead;
    const first = Math.floor(offset / size);
    const last = Math.floor((offset + len - 1) / size);
    if (first === last) {
      const chunk = this.chunks.get(first);
      if (chunk?.data !== undefined) {
        // most recently used goes last
        this.chunks.delete(first);
        this.chunks.set(first, chunk);
        const at = offset - first * size;
        callBack(fn, chunk.data.slice(at, at + len));
        return;
      }
    }
    const parts: Promise<Uint8Array>[] = [];
    for (let i = first; i <= last; i++) parts.push(this.chunk(i).ready);
    Promise.all(parts).then(
      (datas) => {
        if (signal?.aborted) return;
        const out = new Uint8Array(len);
        for (let i = 0; i < datas.length; i++) applyWrite(out, offset, { offset: (first + i) * size, data: datas[i] });
        callBack(fn, out);
      },
      (e: unknown) => {
        if (signal?.aborted) return;
        this.emit('io-error', { operation: 'read', offset, length: len, error: toBlockError(e, 'read', offset) });
      },
    );
  }

  /** Chunk `index` of the read-ahead cache, its read started when it is not there; evicts the least recently used read chunk past the limit. */
  private chunk(index: number): Chunk {
    const known = this.chunks.get(index);
    if (known !== undefined) {
      this.chunks.delete(index);
      this.chunks.set(index, known);
      return known;
    }
    const offset = index * this.readahead;
    const length = Math.min(this.readahead, this.byteLength - offset);
    const fill: CacheFill = { offset, length, laterWrites: [] };
    const inFlight = this.pending.filter((w) => overlaps(w.offset, w.data.length, offset, length));
    this.fills.add(fill);
    const chunk: Chunk = { data: undefined, ready: Promise.resolve(new Uint8Array(0)) };
    chunk.ready = Promise.resolve()
      .then(() => this.drive.read(offset, Math.max(0, length)))
      .then(
        (answer) => {
          this.fills.delete(fill);
          const data = plain(answer);
          for (const w of inFlight) applyWrite(data, offset, w);
          for (const w of fill.laterWrites) applyWrite(data, offset, w);
          chunk.data = data;
          return data;
        },
        (e: unknown) => {
          this.fills.delete(fill);
          if (this.chunks.get(index) === chunk) this.chunks.delete(index);
          throw e;
        },
      );
    // its failure reaches the reads waiting for it; never unhandled meanwhile
    chunk.ready.catch(() => undefined);
    this.chunks.set(index, chunk);
    if (this.chunks.size > READAHEAD_CHUNKS) {
      for (const [i, c] of this.chunks) {
        if (c.data === undefined) continue;
        this.chunks.delete(i);
        break;
      }
    }
    return chunk;
  }

  /** Applies a write of the disk to the read chunks it overlaps (chunks still reading get it from their fill). */
  private patchChunks(offset: number, data: Uint8Array): void {
    const last = Math.floor((offset + data.length - 1) / this.readahead);
    for (let i = Math.floor(offset / this.readahead); i <= last; i++) {
      const chunk = this.chunks.get(i);
      if (chunk?.data !== undefined) applyWrite(chunk.data, i * this.readahead, { offset, data });
    }
  }

  /** Forgets the chunks overlapping a range. */
  private dropChunks(offset: number, length: number): void {
    const last = Math.floor((offset + length - 1) / this.readahead);
    for (let i = Math.floor(offset / this.readahead); i <= last; i++) this.chunks.delete(i);
  }

  private storeInCache(offset: number, data: Uint8Array, laterWrites: PendingWrite[]): void {
    const copy = data.slice();
    for (const w of laterWrites) applyWrite(copy, offset, w);
    const first = Math.ceil(offset / CACHE_BLOCK);
    const end = Math.floor((offset + data.length) / CACHE_BLOCK);
    for (let b = first; b < end; b++) {
      if (this.cache.has(b)) continue;
      const at = b * CACHE_BLOCK - offset;
      this.cache.set(b, copy.slice(at, at + CACHE_BLOCK));
    }
  }

  private forget(entry: PendingWrite): void {
    const i = this.pending.indexOf(entry);
    if (i >= 0) this.pending.splice(i, 1);
  }
}

/**
 * Wraps a drive as a disk v86 takes as `hda`, `hdb`, `cdrom` or `fda`. Given a drive still opening
 * (`layer.openDrive(…)` not awaited), v86 starts meanwhile and waits for the open only when it
 * loads its disks; `disk.opened` settles with the drive or the open's error.
 */
export function toV86Disk(drive: V86DiskDrive | PromiseLike<V86DiskDrive>, options?: V86DiskOptions): V86Disk {
  return new V86Disk(drive, options);
}
