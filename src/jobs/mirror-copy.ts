// The copying part of a mirror (QEMU mirror_run / mirror_iteration): an unnamed dirty bitmap
// on the source records every write; the job marks what to copy first, then copies dirty chunks
// (several in flight, bounded by the buffer size) until nothing is dirty: READY. It keeps
// copying new writes until it is told to finish, then quiesces the source's users, copies what is
// left and returns with them held (the pivot happens in the job's prepare).
import { BlockError } from '../errors.js';
import { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { BlockNode } from '../node/node.js';
import { loopTurn } from '../platform/event-loop.js';
import { EarlyWriteback } from './commit-writeback.js';
import type { Job, JobErrorPolicy } from './job.js';

/** What a mirror copies before following new writes. */
export type SyncMode = 'full' | 'top' | 'none';

/** Copies in flight at most (QEMU MAX_IN_FLIGHT). */
const MAX_IN_FLIGHT = 16;
/** The smallest cap of one copy (QEMU MAX_IO_BYTES). */
const MAX_IO_BYTES = 1 << 20;
/** Default bytes in flight (QEMU DEFAULT_MIRROR_BUF_SIZE). */
export const DEFAULT_MIRROR_BUF_SIZE = MAX_IN_FLIGHT * MAX_IO_BYTES;
/** How long a READY mirror with nothing dirty sleeps before it looks again (QEMU BLOCK_JOB_SLICE_TIME). */
const READY_POLL_NS = 100_000_000;
/**
 * Bytes written to the target between two early flushes of its files ({@link EarlyWriteback}:
 * write-out hints every 8 MiB between them), so that the flush before READY finds little left.
 * bench/mirror.ts (1 GiB, 512 MiB copied onto a new qcow2): that flush took a median 426 ms
 * without, 40-80 ms with. Flushes every 16, 32 or 128 MiB and hints every 4 or 16 MiB were within
 * the noise of this spacing (10 paired rounds each at load 7-8: medians 1.03-1.09x, spreads 0.7-1.45x).
 */
export const MIRROR_WRITEBACK_EVERY = 64 * 1024 * 1024;
/** Widest block-status query while marking what a sync=top mirror copies. */
const STATUS_STEP = 1 << 30;

/** Bytes of copy buffers kept for the next mirror when one ends (two default mirrors' worth). */
const POOL_BYTES_MAX = 2 * DEFAULT_MIRROR_BUF_SIZE;
/**
 * Copy buffers of finished mirrors, by size: the next mirror takes them instead of new memory
 * (QEMU's buffers come from the allocator's free lists the same way). New memory costs a page
 * fault per 4 KiB on first touch, 256 per MiB copied: as much CPU as the copy itself.
 */
const bufferPool = new Map<number, Uint8Array[]>();
let pooledBytes = 0;

/** A buffer of `size` bytes from the pool, or new and not zeroed (every byte is read into before it is written anywhere). */
function pooledBuffer(size: number): Uint8Array {
  const kept = bufferPool.get(size)?.pop();
  if (kept !== undefined) {
    pooledBytes -= size;
    return kept;
  }
  return Buffer.allocUnsafeSlow(size);
}

/** Gives buffers no I/O uses any more back to the pool, as far as it has room. */
function poolBuffers(buffers: Uint8Array[]): void {
  for (const b of buffers) {
    if (pooledBytes + b.length > POOL_BYTES_MAX) return;
    const list = bufferPool.get(b.length);
    if (list === undefined) bufferPool.set(b.length, [b]);
    else list.push(b);
    pooledBytes += b.length;
  }
}

/** How a mirror copies. */
export interface MirrorSettings {
  sync: SyncMode;
  granularity: number;
  bufSize: number;
  onSourceError: JobErrorPolicy;
  onTargetError: JobErrorPolicy;
  /** The target is a new image that reads zeroes: a full mirror copies only what the source's chain allocates. */
  targetZeroInit: boolean;
  /** QEMU's copy-mode write-blocking: writes through the mirror's filter reach the target before they complete ({@link writeThrough}). */
  writeBlocking: boolean;
}

/** What a write through the mirror's filter does: data, or zeroes. */
export type ActiveWriteKind = 'data' | 'zeroes';

/** What the job decides for the copy: whether to finish, and holding the source's users across the last copy. */
export interface MirrorFinish {
  /** job-complete or a soft cancel was asked. */
  shouldComplete(): boolean;
  /** Holds every user of the source (drained) until {@link release}. */
  quiesce(): Promise<void>;
  release(): void;
}

/** A copy (or a write-zeroes) in flight. */
interface CopyOp {
  offset: number;
  bytes: number;
  /** Its index in the list that holds it (ops or active), for an O(1) removal. */
  at: number;
}

/** A failed read or write, kept until the run loop applies the error policy. */
interface CopyError {
  operation: 'read' | 'write';
  error: unknown;
}

export class MirrorCopy {
  private readonly bitmap: DirtyBitmap;
  private readonly granularity: number;
  /** Largest copy in one operation (QEMU: max(buf_size / 16, 1 MiB), at least a granule, at most the buffer). */
  private readonly opMax: number;
  /** Copy buffers of opMax bytes: made on first use, reused, never more than the buffer size holds. */
  private readonly freeBuffers: Uint8Array[] = [];
  private buffersMade = 0;
  private readonly buffersMax: number;
  private readonly ops: CopyOp[] = [];
  /** Writes through the filter on their way to the target (write-blocking): copies stay clear of them and they of copies. */
  private readonly active: CopyOp[] = [];
  private activeBytes = 0;
  private bytesInFlight = 0;
  private readonly errors: CopyError[] = [];
  /** Where the next search for a dirty chunk starts (QEMU's bitmap iterator). */
  private cursor = 0;
  private length = 0;
  /** What {@link waitForOp} handed out since the last op ended, shared by every waiter (null: nobody waits). */
  private opEnded: Promise<void> | null = null;
  /** Resolves {@link opEnded}. */
  private wakeWaiters: (() => void) | null = null;
  /** The executor of {@link opEnded}, made once: waiting costs no closure. */
  private readonly keepWake = (resolve: () => void): void => {
    this.wakeWaiters = resolve;
  };
  private released = false;
  /** Where the mirror wrote the target, when the target read zeroes throughout at the start (else null: always write zeroes). */
  private written: DirtyBitmap | null = null;
  /** The job whose progress finished copies count in. */
  private job: Job | null = null;
  /** The target's files written out as the copy goes on (while {@link run} runs). */
  private writeback: EarlyWriteback | null = null;

  constructor(
    private readonly source: BlockNode,
    private readonly target: BlockNode,
    private readonly settings: MirrorSettings,
  ) {
    this.granularity = settings.granularity;
    this.bitmap = source.bitmaps.addInternal(settings.granularity);
    this.opMax = Math.min(settings.bufSize, Math.max(Math.floor(settings.bufSize / MAX_IN_FLIGHT), MAX_IO_BYTES, settings.granularity));
    this.buffersMax = Math.max(1, Math.floor(settings.bufSize / this.opMax));
  }

  /** Gives the bitmap back (once). */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.source.bitmaps.releaseInternal(this.bitmap);
    // Only buffers no copy holds: one still in flight is dropped when it ends (copyOp).
    poolBuffers(this.freeBuffers);
    this.freeBuffers.length = 0;
  }

  /** The whole run: returns with the source's users quiesced and target in sync, or early when cancelled; throws when the job fails. */
  async run(job: Job, finish: MirrorFinish): Promise<void> {
    if (job.isCancelled) return;
    this.job = job;
    this.length = this.source.length;
    if (this.length !== this.target.length) throw new BlockError('EINVAL', 'Source and target image have different sizes');
    if (this.length === 0) {
      job.transitionToReady();
      while (!finish.shouldComplete() && !job.isCancelled) await job.idle();
      return;
    }
    this.writeback = await EarlyWriteback.of(this.target, MIRROR_WRITEBACK_EVERY);
    try {
      if (this.settings.sync !== 'none') await this.markInitial(job);
      if (job.isCancelled) return;
      await this.loop(job, finish);
    } finally {
      await this.waitAllIo();
      const writeback = this.writeback;
      this.writeback = null;
      // A failure left here is of an early flush after the last flush the job owed: the job
      // was cancelled or failed already (a completed mirror flushed the target after its last write).
      await writeback.settle().catch(() => undefined);
    }
  }

  private async loop(job: Job, finish: MirrorFinish): Promise<void> {
    for (;;) {
      if (this.errors.length > 0) await this.applyErrorPolicy(job);
      if (job.userPaused) await this.waitAllIo(); // QEMU's mirror_pause: nothing in flight while paused
      await job.pausePoint();
      if (job.isCancelled) return;
      const dirty = this.bitmap.count;
      job.setRemaining(this.bytesInFlight + dirty + this.activeBytes);
      if (job.ioStatus !== 'ok') {
        await this.pace(job, 0);
        continue;
      }
      if (dirty !== 0) {
        if (this.ops.length >= MAX_IN_FLIGHT) await this.waitForOp();
        else await this.pace(job, await this.iteration());
        continue;
      }
      // Nothing left to start. QEMU waits for a moment with nothing dirty and nothing in flight
      // too; a guest writing every millisecond makes such moments rare when a copy takes a few
      // milliseconds, so the job converges on "nothing dirty once": what is in flight settles,
      // the target is flushed, READY; later writes are dirty again and copied in the background.
      if (!job.isReady) {
        await this.waitAllIo();
        if (this.errors.length > 0 || !(await this.flushTarget(job))) continue;
        job.transitionToReady();
      }
      if (finish.shouldComplete()) {
        if (await this.finalCopy(job, finish)) return;
        continue;
      }
      if (this.ops.length > 0) await this.waitForOp();
      else await job.sleep(READY_POLL_NS);
    }
  }

  /**
   * The last copy, with every user of the source held (QEMU's drained section before the pivot):
   * writes in flight when the users were held are dirty now; nothing new can arrive, so what is
   * left is copied and the mirror is in sync. (QEMU lets go and tries again when anything is
   * dirty, which a guest that always has a write in flight starves.) False when a copy or the
   * flush failed or the job was cancelled: the users are let go and the loop goes on.
   */
  private async finalCopy(job: Job, finish: MirrorFinish): Promise<boolean> {
    await finish.quiesce();
    while ((this.bitmap.count > 0 || this.ops.length > 0) && this.errors.length === 0 && !job.isCancelled) {
      if (this.bitmap.count > 0 && this.ops.length < MAX_IN_FLIGHT) await this.iteration();
      else await this.waitForOp();
    }
    if (this.errors.length > 0 || job.isCancelled || !(await this.flushTarget(job))) {
      await this.waitAllIo();
      finish.release();
      return false;
    }
    // The last copies were counted as done: what is left is nothing (offset = len, as QEMU ends).
    job.setRemaining(0);
    return true;
  }

  /** The speed limit; without one, still a turn of the event loop, so guests and timers get their share. */
  private async pace(job: Job, bytes: number): Promise<void> {
    if (job.speed === 0) await loopTurn();
    await job.throttle(bytes);
  }

  /**
   * Marks what the first pass copies (QEMU mirror_dirty_init): for `full`, every byte, or only
   * what the source's chain allocates when the target is new (QEMU's zero_target off); for
   * `top`, what the top node holds itself. A target that reads zeroes throughout needs no
   * write-zeroes until the mirror writes there ({@link written}).
   */
  private async markInitial(job: Job): Promise<void> {
    const full = this.settings.sync === 'full';
    if (full && (this.settings.targetZeroInit || (await this.readsZero(this.target)))) {
      this.written = new DirtyBitmap('', this.length, { granularity: this.granularity, recording: true, persistent: false });
    }
    if (full && !this.settings.targetZeroInit) {
      this.bitmap.markDirty(0, this.length);
      return;
    }
    for (let offset = 0; offset < this.length; ) {
      await job.pausePoint();
      if (job.isCancelled) return;
      const s = await this.source.blockStatus(offset, Math.min(STATUS_STEP, this.length - offset));
      if (full ? s.allocated || s.data : s.allocated && s.depth === 0) this.bitmap.markDirty(offset, s.length);
      offset += s.length;
    }
  }

  /** Whether a node reads as zeroes from start to end (a new image): stops at the first extent that does not. */
  private async readsZero(node: BlockNode): Promise<boolean> {
    for (let offset = 0; offset < this.length; ) {
      const s = await node.blockStatus(offset, Math.min(STATUS_STEP, this.length - offset));
      if (s.data || !s.zero) return false;
      offset += s.length;
    }
    return true;
  }

  /**
   * Copies one run of dirty chunks starting at the next dirty one (QEMU mirror_iteration):
   * at most the buffer size, stopping before a chunk in flight; data is copied in pieces of at
   * most {@link opMax}, zero ranges become write-zeroes. Returns the bytes to count against the speed.
   */
  private async iteration(): Promise<number> {
    const g = this.granularity;
    const found = this.bitmap.nextDirtyExtent(this.cursor, this.length) ?? this.bitmap.nextDirtyExtent(0, this.length);
    if (found === null) return 0;
    const offset = found.offset - (found.offset % g);
    if (this.inFlightAt(offset, offset + g) !== -1) {
      await this.waitForOp();
      return 0;
    }
    let end = Math.min(found.offset + found.length, offset + this.settings.bufSize, this.length);
    const busy = this.inFlightAt(offset, end);
    if (busy !== -1) end = busy;
    // Clean before reading: a write landing while we copy marks the chunk again.
    this.bitmap.markClean(offset, end - offset);
    this.cursor = end >= this.length ? 0 : end;
    let accounted = 0;
    for (let pos = offset; pos < end; ) {
      let zero = false;
      let bytes: number;
      try {
        const s = await this.source.blockStatus(pos, end - pos);
        zero = !s.data;
        bytes = zero ? s.length : Math.min(s.length, this.opMax);
      } catch {
        bytes = Math.min(end - pos, this.opMax);
      }
      bytes -= bytes % g;
      if (bytes < g) {
        bytes = g;
        zero = false;
      }
      bytes = Math.min(bytes, end - pos);
      while (this.ops.length >= MAX_IN_FLIGHT || (!zero && this.freeBuffers.length === 0 && this.buffersMade >= this.buffersMax)) await this.waitForOp();
      if (this.errors.length > 0) {
        // Stop issuing; what was not started stays dirty.
        this.bitmap.markDirty(pos, end - pos);
        break;
      }
      if (zero) void this.zeroOp(pos, bytes);
      else {
        void this.copyOp(pos, bytes, this.takeBuffer());
        accounted += bytes;
      }
      pos += bytes;
    }
    return accounted;
  }

  /** Index-free test: the start of the first op in flight (a copy or an active write) that overlaps [start, end), or -1. */
  private inFlightAt(start: number, end: number): number {
    const a = this.firstOverlap(this.ops, start, end);
    const b = this.active.length === 0 ? -1 : this.firstOverlap(this.active, start, end);
    return a === -1 ? b : b === -1 ? a : Math.min(a, b);
  }

  private firstOverlap(ops: readonly CopyOp[], start: number, end: number): number {
    let first = -1;
    for (const op of ops) {
      if (op.offset < end && start < op.offset + op.bytes) {
        const at = Math.max(op.offset - (op.offset % this.granularity), start);
        if (first === -1 || at < first) first = at;
      }
    }
    return first;
  }

  private takeBuffer(): Uint8Array {
    const free = this.freeBuffers.pop();
    if (free !== undefined) return free;
    this.buffersMade++;
    return pooledBuffer(this.opMax);
  }

  private begin(offset: number, bytes: number): CopyOp {
    const op = addOp(this.ops, offset, bytes);
    this.bytesInFlight += bytes;
    return op;
  }

  private end(op: CopyOp): void {
    removeOp(this.ops, op);
    this.bytesInFlight -= op.bytes;
    this.opFinished();
  }

  /** Wakes whoever waits for an op to end. */
  private opFinished(): void {
    const wake = this.wakeWaiters;
    if (wake === null) return;
    this.wakeWaiters = null;
    this.opEnded = null;
    wake();
  }

  private async copyOp(offset: number, bytes: number, buffer: Uint8Array): Promise<void> {
    const op = this.begin(offset, bytes);
    const data = buffer.subarray(0, bytes);
    let stage: 'read' | 'write' = 'read';
    try {
      await this.source.read(offset, data);
      stage = 'write';
      this.written?.markDirty(offset, bytes);
      await this.target.write(offset, data);
      this.writeback?.wrote(bytes);
      this.job?.addProgress(bytes);
    } catch (error) {
      this.failed(offset, bytes, stage, error);
    } finally {
      if (!this.released) this.freeBuffers.push(buffer);
      this.end(op);
    }
  }

  private async zeroOp(offset: number, bytes: number): Promise<void> {
    const op = this.begin(offset, bytes);
    try {
      const written = this.written;
      if (written === null || written.nextDirtyExtent(offset, offset + bytes) !== null) await this.target.writeZeroes(offset, bytes);
      written?.markDirty(offset, bytes);
      this.job?.addProgress(bytes);
    } catch (error) {
      this.failed(offset, bytes, 'write', error);
    } finally {
      this.end(op);
    }
  }

  /**
   * A write through the mirror's filter (QEMU bdrv_mirror_top_do_write). In write-blocking mode,
   * while the job runs, it waits until no copy or other active write touches its granules, writes
   * the source, then the target, and only then completes: the granules it covered whole are in
   * sync and cleaned, so a mirror under heavy writes still converges. A partly covered granule
   * keeps the state it had (the write changed both sides alike). Otherwise it is a plain write of
   * the source, which the bitmap records for the background copy.
   */
  async writeThrough(kind: ActiveWriteKind, offset: number, length: number, data: Uint8Array | null): Promise<void> {
    const job = this.job;
    if (!this.settings.writeBlocking || this.released || job === null || job.isCancelled || length === 0) return this.writeSource(kind, offset, length, data);
    const g = this.granularity;
    const size = this.source.length;
    const start = offset - (offset % g);
    const end = Math.min(size, Math.ceil((offset + length) / g) * g);
    while (this.inFlightAt(start, end) !== -1) await this.waitForOp();
    const op = addOp(this.active, start, end - start);
    // Counted as QEMU counts it: the write adds to the work, and to what is done once on the target.
    job.addRemaining(length);
    this.activeBytes += length;
    try {
      const headKept = offset !== start && this.bitmap.isDirty(start);
      const tailKept = offset + length !== end && this.bitmap.isDirty(end - 1);
      await this.writeSource(kind, offset, length, data);
      this.written?.markDirty(offset, length);
      try {
        if (kind === 'data') {
          await this.target.write(offset, data!);
          this.writeback?.wrote(length);
        } else await this.target.writeZeroes(offset, length);
      } catch (error) {
        // The guest's write succeeded on the source; the target's failure is the job's (on-target-error).
        this.failed(offset, length, 'write', error);
        return;
      }
      const cleanFrom = headKept ? start + g : start;
      const cleanTo = tailKept ? end - g : end;
      if (cleanTo > cleanFrom) this.bitmap.markClean(cleanFrom, cleanTo - cleanFrom);
      job.addProgress(length);
    } finally {
      this.activeBytes -= length;
      removeOp(this.active, op);
      this.opFinished();
    }
  }

  private writeSource(kind: ActiveWriteKind, offset: number, length: number, data: Uint8Array | null): Promise<void> {
    return kind === 'data' ? this.source.write(offset, data!) : this.source.writeZeroes(offset, length);
  }

  /** A failed piece is dirty again (copied later unless the policy fails the job). */
  private failed(offset: number, bytes: number, operation: 'read' | 'write', error: unknown): void {
    this.bitmap.markDirty(offset, bytes);
    this.errors.push({ operation, error });
  }

  /**
   * Applies the error policy to the first failure queued (QEMU block_job_error_action), after
   * everything in flight has settled: `report` fails the job, `ignore` goes on, `stop` pauses
   * until resumed. Failures queued with it are of the same burst: their pieces are dirty again.
   */
  private async applyErrorPolicy(job: Job): Promise<void> {
    await this.waitAllIo();
    const first = this.errors[0]!;
    this.errors.length = 0;
    const policy = first.operation === 'read' ? this.settings.onSourceError : this.settings.onTargetError;
    await job.onIoError(policy, first.operation, first.error);
  }

  /**
   * Flushes the target; false when that failed and the job should look again (QEMU mirror_flush).
   * A failed early flush of its files is this flush's failure: an fdatasync error is reported
   * once, so the flush that follows could succeed over data that never reached the disk.
   */
  private async flushTarget(job: Job): Promise<boolean> {
    try {
      await this.writeback?.drain();
      await this.target.flush();
      return true;
    } catch (error) {
      await job.onIoError(this.settings.onTargetError, 'write', error);
      return false;
    }
  }

  /** Resolves when the next op in flight (a copy or an active write) ends (at once when none is). */
  private waitForOp(): Promise<void> {
    if (this.ops.length === 0 && this.active.length === 0) return Promise.resolve();
    this.opEnded ??= new Promise<void>(this.keepWake);
    return this.opEnded;
  }

  private async waitAllIo(): Promise<void> {
    while (this.ops.length > 0) await this.waitForOp();
  }
}

/** Removes `op` from `ops` in O(1): the last op takes its place (no search depends on the order). */
function removeOp(ops: CopyOp[], op: CopyOp): void {
  const last = ops.pop()!;
  if (last === op) return;
  ops[op.at] = last;
  last.at = op.at;
}

function addOp(ops: CopyOp[], offset: number, bytes: number): CopyOp {
  const op = { offset, bytes, at: ops.length };
  ops.push(op);
  return op;
}
