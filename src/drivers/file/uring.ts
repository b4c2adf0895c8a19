import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { nextTick } from 'node:process';

/*
 * An io_uring instance driven from JavaScript (the file driver's `aio: 'io_uring'` engine).
 *
 * Raw syscalls through koffi, not liburing: liburing's per-request helpers (io_uring_prep_*,
 * io_uring_cq_advance) are static inline and its `struct io_uring` changes layout between
 * versions, while the kernel ABI (io_uring_params offsets, SQE/CQE layout) is fixed. So the
 * rings are mmapped and viewed as typed arrays: queuing a request writes one 64-byte SQE in
 * JS, reaping reads CQEs in JS, and only io_uring_enter crosses into C, once per batch.
 *
 * Batching: requests queue SQEs and schedule one submit on process.nextTick. A nextTick
 * queued from a promise reaction runs after the whole microtask queue has drained, so every
 * request issued during this turn's promise chains goes in the same io_uring_enter.
 *
 * Completions: page-cache hits complete inside io_uring_enter, so the CQ ring is read right
 * after each submit. Requests the kernel finishes later (disk reads, fsync, writes punted to
 * its workers) post to an eventfd registered with the ring. While such requests are in
 * flight a read of that eventfd waits on the libuv pool (Node cannot watch an eventfd from
 * the event loop with public API: net.Socket refuses its fd type); the read returns when a
 * completion is posted and we reap. The waiting thread waits on the kernel, never on JS.
 *
 * One ring per thread (module instance), shared by every drive using the engine, so
 * requests of all drives batch together. Buffers stay referenced in `held` from queuing
 * until completion; `.buffer` is touched first so a small on-heap typed array moves to its
 * fixed off-heap store before its address is taken.
 *
 * Linux x86-64 and arm64 only (io_uring syscall numbers 425-427 are the same on both).
 */

type KoffiModule = typeof import('koffi');
type KoffiFunction = ReturnType<ReturnType<KoffiModule['load']>['func']>;

/** Completion callback: res is bytes transferred (>= 0) or a negated errno. */
export type UringCallback = (res: number) => void;

const SYS_IO_URING_SETUP = 425;
const SYS_IO_URING_ENTER = 426;
const SYS_IO_URING_REGISTER = 427;
const IORING_REGISTER_EVENTFD = 4;
const IORING_REGISTER_PROBE = 8;
const IORING_FEAT_SINGLE_MMAP = 1;
const IORING_OFF_SQ_RING = 0;
const IORING_OFF_SQES = 0x10000000;
const IO_URING_OP_SUPPORTED = 1;

const OP_FSYNC = 3;
const OP_READ = 22;
const OP_WRITE = 23;
const IORING_FSYNC_DATASYNC = 1;
const NEEDED_OPS = [OP_FSYNC, OP_READ, OP_WRITE];

const PROT_READ_WRITE = 0x3;
const MAP_SHARED_POPULATE = 0x01 | 0x8000;
const EFD_CLOEXEC = 0o2000000;
const MAP_FAILED = 2n ** 64n - 1n;
const EINTR = 4;
const EAGAIN = 11;
const EBUSY = 16;

/** Submission queue size; at most this many requests are in the kernel at once (the rest wait in JS). */
const ENTRIES = 256;
const TWO_32 = 2 ** 32;

interface Syscalls {
  koffi: KoffiModule;
  setup: KoffiFunction;
  enter: KoffiFunction;
  register: KoffiFunction;
  mmap: KoffiFunction;
  eventfd: KoffiFunction;
  close: KoffiFunction;
}

interface Backlogged {
  op: number;
  fd: number;
  offset: number;
  buffer: Uint8Array | null;
  start: number;
  length: number;
  flags: number;
  cb: UringCallback;
}

export class Uring {
  private readonly koffi: KoffiModule;
  private readonly sqTail: Uint32Array;
  private readonly sqMask: number;
  private readonly sqes: Uint32Array;
  private readonly cqHead: Uint32Array;
  private readonly cqTail: Uint32Array;
  private readonly cqMask: number;
  private readonly cqes: Uint32Array;
  private readonly cqesSigned: Int32Array;
  /** Next SQ tail (ours; published to the kernel at submit). */
  private tail = 0;
  private unsubmitted = 0;
  private inKernel = 0;
  private scheduled = false;
  private waiting = false;
  private failure: number | null = null;
  private readonly callbacks: (UringCallback | null)[] = new Array(ENTRIES).fill(null);
  private readonly held: (Uint8Array | null)[] = new Array(ENTRIES).fill(null);
  private readonly freeSlots = new Int32Array(ENTRIES);
  private freeCount = ENTRIES;
  private readonly backlog: Backlogged[] = [];
  private readonly eventBuf = new Uint8Array(8);
  private readonly submitNow = () => this.submit();
  /** Submits scheduled on nextTick since the event loop last had a turn (see {@link schedule}). */
  private chained = 0;
  private readonly loopHadTurn = () => {
    this.chained = 0;
  };
  private readonly onEvent = () => {
    this.waiting = false;
    this.reap();
    this.armWait();
  };

  constructor(
    private readonly sys: Syscalls,
    private readonly ringFd: number,
    private readonly eventFd: number,
    params: DataView,
    ring: ArrayBuffer,
    sqes: ArrayBuffer,
  ) {
    this.koffi = sys.koffi;
    const u32 = (off: number) => new Uint32Array(ring, params.getUint32(off, true), 1);
    // io_uring_params: sq_off at 40 (head, tail, ring_mask, ring_entries, flags, dropped, array),
    // cq_off at 80 (head, tail, ring_mask, ring_entries, overflow, cqes, flags).
    this.sqTail = u32(44);
    this.sqMask = u32(48)[0];
    const sqEntries = u32(52)[0];
    const sqArray = new Uint32Array(ring, params.getUint32(64, true), sqEntries);
    // SQ slot i always names SQE i: the indirection array is filled once.
    for (let i = 0; i < sqEntries; i++) sqArray[i] = i;
    this.cqHead = u32(80);
    this.cqTail = u32(84);
    this.cqMask = u32(88)[0];
    const cqEntries = u32(92)[0];
    this.cqes = new Uint32Array(ring, params.getUint32(100, true), cqEntries * 4);
    this.cqesSigned = new Int32Array(ring, params.getUint32(100, true), cqEntries * 4);
    this.sqes = new Uint32Array(sqes);
    this.tail = Atomics.load(this.sqTail, 0);
    for (let i = 0; i < ENTRIES; i++) this.freeSlots[i] = ENTRIES - 1 - i;
  }

  /** pread into buffer[start, start+length) at offset. */
  read(fd: number, buffer: Uint8Array, start: number, length: number, offset: number, cb: UringCallback): void {
    this.queue(OP_READ, fd, offset, buffer, start, length, 0, cb);
  }

  /** pwrite from data[start, start+length) at offset. */
  write(fd: number, data: Uint8Array, start: number, length: number, offset: number, cb: UringCallback): void {
    this.queue(OP_WRITE, fd, offset, data, start, length, 0, cb);
  }

  /** fdatasync(fd). */
  fdatasync(fd: number, cb: UringCallback): void {
    this.queue(OP_FSYNC, fd, 0, null, 0, 0, IORING_FSYNC_DATASYNC, cb);
  }

  private queue(
    op: number,
    fd: number,
    offset: number,
    buffer: Uint8Array | null,
    start: number,
    length: number,
    flags: number,
    cb: UringCallback,
  ): void {
    if (this.failure !== null) {
      const errno = this.failure;
      queueMicrotask(() => cb(-errno));
      return;
    }
    if (this.freeCount === 0) {
      this.backlog.push({ op, fd, offset, buffer, start, length, flags, cb });
      return;
    }
    this.fill(op, fd, offset, buffer, start, length, flags, cb);
    this.schedule();
  }

  /**
   * Schedules one submit for this turn. Page-cache hits complete inside the submit, their
   * callers queue more, and a nextTick chain never lets the event loop run: timers, sockets and
   * other drives would wait for as long as a reader keeps going. So after MAX_CHAINED_SUBMITS
   * submits without a loop turn (seen by an immediate that resets the count) the next one
   * waits for setImmediate.
   */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    if (this.chained === 0) setImmediate(this.loopHadTurn);
    if (this.chained++ < MAX_CHAINED_SUBMITS) nextTick(this.submitNow);
    else setImmediate(this.submitNow);
  }

  /** Writes one SQE (at most ENTRIES requests are between queue and completion, so the SQ has room). */
  private fill(
    op: number,
    fd: number,
    offset: number,
    buffer: Uint8Array | null,
    start: number,
    length: number,
    flags: number,
    cb: UringCallback,
  ): void {
    let addr = 0;
    if (buffer !== null) {
      void buffer.buffer;
      addr = Number(this.koffi.address(buffer)) + start;
    }
    const slot = this.freeSlots[--this.freeCount];
    this.callbacks[slot] = cb;
    this.held[slot] = buffer;
    const w = (this.tail & this.sqMask) * 16;
    const s = this.sqes;
    s[w] = op; // opcode, flags 0, ioprio 0
    s[w + 1] = fd;
    s[w + 2] = offset >>> 0;
    s[w + 3] = Math.floor(offset / TWO_32);
    s[w + 4] = addr >>> 0;
    s[w + 5] = Math.floor(addr / TWO_32);
    s[w + 6] = length;
    s[w + 7] = flags;
    s[w + 8] = slot; // user_data
    s[w + 9] = 0;
    s[w + 10] = 0;
    s[w + 11] = 0;
    s[w + 12] = 0;
    s[w + 13] = 0;
    s[w + 14] = 0;
    s[w + 15] = 0;
    this.tail = (this.tail + 1) >>> 0;
    this.unsubmitted++;
  }

  /** Publishes the queued SQEs and enters the kernel once for all of them. */
  private submit(): void {
    this.scheduled = false;
    while (this.unsubmitted > 0 && this.failure === null) {
      Atomics.store(this.sqTail, 0, this.tail);
      const n = Number(this.sys.enter(SYS_IO_URING_ENTER, this.ringFd, this.unsubmitted, 0, 0, null, 0));
      if (n >= 0) {
        this.unsubmitted -= n;
        this.inKernel += n;
        if (n === 0) break;
        continue;
      }
      const errno = this.koffi.errno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN || errno === EBUSY) {
        // Kernel short of resources: retry after completions free some.
        this.reap();
        this.scheduled = true;
        setImmediate(this.submitNow);
        return;
      }
      this.fail(errno);
      return;
    }
    this.reap();
    this.armWait();
  }

  /** Settles every posted completion and moves waiting requests into freed slots. */
  private reap(): void {
    let head = this.cqHead[0];
    const tail = Atomics.load(this.cqTail, 0);
    if (head === tail) return;
    const cqes = this.cqes;
    const mask = this.cqMask;
    for (; head !== tail; head = (head + 1) >>> 0) {
      const c = (head & mask) * 4;
      const slot = cqes[c];
      const res = this.cqesSigned[c + 2];
      const cb = this.callbacks[slot] as UringCallback;
      this.callbacks[slot] = null;
      this.held[slot] = null;
      this.freeSlots[this.freeCount++] = slot;
      this.inKernel--;
      // Release the CQE before the callback: it may queue more work (a short-read continuation).
      Atomics.store(this.cqHead, 0, (head + 1) >>> 0);
      cb(res);
    }
    this.refill();
  }

  private refill(): void {
    const backlog = this.backlog;
    if (backlog.length === 0 || this.freeCount === 0) return;
    let i = 0;
    for (; i < backlog.length && this.freeCount > 0; i++) {
      const b = backlog[i];
      this.fill(b.op, b.fd, b.offset, b.buffer, b.start, b.length, b.flags, b.cb);
    }
    backlog.splice(0, i);
    this.schedule();
  }

  /** While the kernel still holds requests, waits (off the event loop) for its eventfd. */
  private armWait(): void {
    if (this.waiting || this.inKernel === 0) return;
    this.waiting = true;
    fs.read(this.eventFd, this.eventBuf, 0, 8, null, this.onEvent);
  }

  /** The ring is unusable (io_uring_enter failed): everything queued fails with that errno. */
  private fail(errno: number): void {
    this.failure = errno;
    // Requests already in the kernel still complete through the eventfd; the unsubmitted ones never will.
    const lost: UringCallback[] = [];
    for (let i = 0; i < this.unsubmitted; i++) {
      const w = (((this.tail - 1 - i) >>> 0) & this.sqMask) * 16;
      const slot = this.sqes[w + 8];
      const cb = this.callbacks[slot];
      if (cb) lost.push(cb);
      this.callbacks[slot] = null;
    }
    this.unsubmitted = 0;
    for (const b of this.backlog.splice(0)) lost.push(b.cb);
    for (const cb of lost) cb(-errno);
    this.armWait();
  }
}

/** Submits in a row before the event loop gets a turn (each may settle up to ENTRIES requests). */
const MAX_CHAINED_SUBMITS = 32;

let shared: Uring | string | undefined;

/** The thread's ring, created on first use; a string says why io_uring is unavailable. */
export function sharedUring(): Uring | string {
  if (shared === undefined) {
    try {
      shared = createUring(ENTRIES);
    } catch (e) {
      shared = `io_uring could not be loaded: ${e instanceof Error ? e.message : String(e)}`;
    }
  }
  return shared;
}

function loadSyscalls(): Syscalls {
  const require = createRequire(import.meta.url);
  const koffi = require('koffi') as KoffiModule;
  const libc = koffi.load('libc.so.6');
  return {
    koffi,
    setup: libc.func('long syscall(long nr, uint32_t entries, _Inout_ uint8_t *params)'),
    enter: libc.func('long syscall(long nr, int fd, uint32_t toSubmit, uint32_t minComplete, uint32_t flags, void *sig, size_t sigsz)'),
    register: libc.func('long syscall(long nr, int fd, uint32_t opcode, void *arg, uint32_t nargs)'),
    mmap: libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)'),
    eventfd: libc.func('int eventfd(uint32_t initval, int flags)'),
    close: libc.func('int close(int fd)'),
  };
}

function errnoName(errno: number): string {
  for (const [name, n] of Object.entries(os.constants.errno)) if (n === errno) return name;
  return `errno ${errno}`;
}

function createUring(entries: number): Uring | string {
  if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) {
    return `io_uring needs Linux on x64 or arm64 (this is ${process.platform}/${process.arch})`;
  }
  const sys = loadSyscalls();
  const { koffi } = sys;
  const params = new Uint8Array(120);
  const ringFd = Number(sys.setup(SYS_IO_URING_SETUP, entries, params));
  if (ringFd < 0) {
    const errno = koffi.errno();
    const why = errno === 1 ? ' (disabled: kernel.io_uring_disabled or a seccomp filter)' : errno === 38 ? ' (kernel without io_uring)' : '';
    return `io_uring_setup failed: ${errnoName(errno)}${why}`;
  }
  let eventFd = -1;
  const bail = (why: string) => {
    sys.close(ringFd);
    if (eventFd >= 0) sys.close(eventFd);
    return why;
  };
  try {
    const p = new DataView(params.buffer);
    if ((p.getUint32(20, true) & IORING_FEAT_SINGLE_MMAP) === 0) return bail('io_uring is too old (no single-mmap rings, Linux < 5.4)');
    const sqEntries = p.getUint32(0, true);
    const cqEntries = p.getUint32(4, true);
    const sqRingSize = p.getUint32(64, true) + sqEntries * 4;
    const cqRingSize = p.getUint32(100, true) + cqEntries * 16;
    const ringSize = Math.max(sqRingSize, cqRingSize);
    // A failed mmap returns MAP_FAILED, (void *)-1. The mappings live as long as the thread.
    const ringPtr = sys.mmap(null, ringSize, PROT_READ_WRITE, MAP_SHARED_POPULATE, ringFd, IORING_OFF_SQ_RING);
    if (koffi.address(ringPtr) === MAP_FAILED) return bail(`io_uring ring mmap failed: ${errnoName(koffi.errno())}`);
    const sqePtr = sys.mmap(null, sqEntries * 64, PROT_READ_WRITE, MAP_SHARED_POPULATE, ringFd, IORING_OFF_SQES);
    if (koffi.address(sqePtr) === MAP_FAILED) return bail(`io_uring SQE mmap failed: ${errnoName(koffi.errno())}`);
    // The probe says whether this kernel has the opcodes we use (READ/WRITE came in 5.6).
    const probe = new Uint8Array(16 + 256 * 8);
    if (Number(sys.register(SYS_IO_URING_REGISTER, ringFd, IORING_REGISTER_PROBE, probe, 256)) < 0) {
      return bail(`io_uring probe failed: ${errnoName(koffi.errno())}`);
    }
    for (const op of NEEDED_OPS) {
      const supported = op <= probe[0] && (probe[16 + op * 8 + 2] & IO_URING_OP_SUPPORTED) !== 0;
      if (!supported) return bail(`io_uring lacks opcode ${op} (kernel too old)`);
    }
    eventFd = Number(sys.eventfd(0, EFD_CLOEXEC));
    if (eventFd < 0) return bail(`eventfd failed: ${errnoName(koffi.errno())}`);
    if (Number(sys.register(SYS_IO_URING_REGISTER, ringFd, IORING_REGISTER_EVENTFD, new Int32Array([eventFd]), 1)) < 0) {
      return bail(`io_uring eventfd registration failed: ${errnoName(koffi.errno())}`);
    }
    return new Uring(sys, ringFd, eventFd, p, koffi.view(ringPtr, ringSize), koffi.view(sqePtr, sqEntries * 64));
  } catch (e) {
    bail('');
    throw e;
  }
}
