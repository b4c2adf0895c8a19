/*
 * Merging of adjacent requests for the thread-pool engine (the request plugging of Linux's
 * block layer, or QEMU virtio-blk's merging of a guest's adjacent requests).
 *
 * Each trip through Node's thread pool costs a worker wake-up and a completion wake-up of
 * the event loop, about 10 µs of CPU, several times the page-cache copy of a 4 KiB read.
 * Requests issued during one turn (the promise chains that run before process.nextTick)
 * wait until then; runs of them that follow each other on the file (each starting where the
 * previous one ends, same direction) go as one preadv/pwritev, so a sequential reader at
 * depth N makes one trip where it made N. Only a request that starts where the previous one
 * ended waits for the tick (or one that arrives while others wait, so their order holds): a
 * random reader's requests go at once, with no tick added. While two calls of queued requests
 * are still on the pool, further queued requests wait for one of them to complete rather than
 * for the tick: requests that arrive one per turn (a format driver's writes, whose completions
 * came staggered) then gather into one call too, instead of staying one trip each.
 *
 * Outcomes are those of the unmerged requests: a merged call that fails is retried as its
 * single requests, each settling with its own result; a short transfer (end of file, a
 * signal) settles the requests it covered and continues the rest one by one, the way the
 * single path continues its own short transfers.
 */

// The module's nextTick, not the global `process` (a getter, called on every use).
import { nextTick } from 'node:process';

type VectoredCallback = (err: NodeJS.ErrnoException | null, n: number) => void;

/** preadv/pwritev of `buffers` at `position` (fs.readv / fs.writev). */
export type Vectored = (fd: number, buffers: Uint8Array[], position: number, cb: VectoredCallback) => void;

/** The single-request path: transfers buffer[done..] at offset + done, then settles. */
export type Single = (offset: number, buffer: Uint8Array, done: number, resolve: () => void, reject: (e: unknown) => void) => void;

/** Calls from queued requests in flight at once before further ones wait for a completion (libuv's pool has 4 threads). */
const MAX_BUSY = 2;
/** At most this many requests in one merged call (IOV_MAX is 1024). */
const MAX_REQUESTS = 256;
/** At most this many bytes in one merged call, so one request does not keep a worker long. */
const MAX_BYTES = 1 << 20;

export class AdjacentMerger {
  private offsets: number[] = [];
  private buffers: Uint8Array[] = [];
  private resolves: (() => void)[] = [];
  private rejects: ((e: unknown) => void)[] = [];
  private count = 0;
  private scheduled = false;
  /** Where the previous request ended: a request starting there is likely part of a sequential run (a reader starting at 0 too). */
  private lastEnd = 0;
  /** Calls issued from queued requests and not yet completed. */
  private busy = 0;
  private readonly flushNow = () => this.flush();
  private readonly callDone = () => {
    this.busy--;
    if (this.count > 0 && !this.scheduled && this.busy < MAX_BUSY) {
      this.scheduled = true;
      nextTick(this.flushNow);
    }
  };

  constructor(
    private readonly fd: number,
    private readonly vectored: Vectored,
    private readonly single: Single,
    /** Called after a merged call transferred bytes, with the offset where they end. */
    private readonly onTransferred: (end: number) => void = NOOP_END,
  ) {}

  /** Queues a request for this turn, or issues it at once when it cannot be part of a run. */
  add(offset: number, buffer: Uint8Array, resolve: () => void, reject: (e: unknown) => void): void {
    const sequential = offset === this.lastEnd;
    this.lastEnd = offset + buffer.length;
    if (this.count === 0 && !sequential) {
      this.single(offset, buffer, 0, resolve, reject);
      return;
    }
    const i = this.count++;
    this.offsets[i] = offset;
    this.buffers[i] = buffer;
    this.resolves[i] = resolve;
    this.rejects[i] = reject;
    // With enough of our calls on the pool, requests gather until one completes: they then go
    // as one call. Without this, requests that arrive one per turn (completions staggered) stay so.
    if (!this.scheduled && this.busy < MAX_BUSY) {
      this.scheduled = true;
      nextTick(this.flushNow);
    }
  }

  /** Issues what is queued: runs of adjacent requests merged, the others one by one. */
  flush(): void {
    this.scheduled = false;
    const n = this.count;
    if (n === 0) return;
    const { offsets, buffers, resolves, rejects } = this;
    this.count = 0;
    let i = 0;
    while (i < n) {
      let end = offsets[i] + buffers[i].length;
      let bytes = buffers[i].length;
      let j = i + 1;
      while (j < n && j - i < MAX_REQUESTS && offsets[j] === end && bytes + buffers[j].length <= MAX_BYTES && buffers[j].length > 0) {
        end += buffers[j].length;
        bytes += buffers[j].length;
        j++;
      }
      if (j - i === 1) this.issueSingle(offsets[i], buffers[i], resolves[i], rejects[i]);
      else this.issueRun(offsets.slice(i, j), buffers.slice(i, j), resolves.slice(i, j), rejects.slice(i, j));
      i = j;
    }
    // Drop the references: the arrays are reused next turn, and neither buffers nor settled
    // requests may stay held. After a burst the arrays go, so their size does not stay.
    if (n > KEEP_ARRAYS_UP_TO) {
      this.offsets = [];
      this.buffers = [];
      this.resolves = [];
      this.rejects = [];
      return;
    }
    for (let k = 0; k < n; k++) {
      buffers[k] = EMPTY;
      resolves[k] = NOOP;
      rejects[k] = NOOP;
    }
  }

  /** One queued request alone, counted as busy until it settles. */
  private issueSingle(offset: number, buffer: Uint8Array, resolve: () => void, reject: (e: unknown) => void): void {
    this.busy++;
    this.single(
      offset,
      buffer,
      0,
      () => {
        this.callDone();
        resolve();
      },
      (e) => {
        this.callDone();
        reject(e);
      },
    );
  }

  private issueRun(offsets: number[], buffers: Uint8Array[], resolves: (() => void)[], rejects: ((e: unknown) => void)[]): void {
    this.busy++;
    this.vectored(this.fd, buffers, offsets[0], (err, n) => {
      this.callDone();
      if (err) {
        // Each request on its own, so each settles with what it alone would have got.
        for (let k = 0; k < offsets.length; k++) this.single(offsets[k], buffers[k], 0, resolves[k], rejects[k]);
        return;
      }
      // The file now reaches at least the end of what was transferred (a write may have grown it).
      if (n > 0) this.onTransferred(offsets[0] + n);
      let left = n;
      for (let k = 0; k < offsets.length; k++) {
        const len = buffers[k].length;
        if (left >= len) {
          left -= len;
          resolves[k]();
          continue;
        }
        this.single(offsets[k], buffers[k], left, resolves[k], rejects[k]);
        left = 0;
      }
    });
  }
}

/** Queued-request arrays up to this length are cleared and reused; longer ones are dropped. */
const KEEP_ARRAYS_UP_TO = 1024;
const EMPTY = new Uint8Array(0);
const NOOP = () => {};
const NOOP_END = (_end: number) => {};
