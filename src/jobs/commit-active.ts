// Active commit (QEMU mirror.c's commit_active_start): the active layer keeps taking writes
// while what it and the images down to the base hold is copied into the base; a dirty bitmap on
// the top catches the writes meanwhile. READY once nothing is dirty; job-complete copies the
// rest with the users of the top drained and moves them to the base.
import type { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { BlockNode } from '../node/node.js';
import { allocatedBetween, CHAIN_CHUNK, writeCopied } from './commit-chain.js';
import { CopyFlights, FLIGHT_PIECE } from './copy-flights.js';
import { EarlyWriteback } from './commit-writeback.js';
import type { JobHost } from './host.js';
import type { Job, JobErrorPolicy, JobWork } from './job.js';

/** How long a READY job waits between looks at the bitmap (QEMU BLOCK_JOB_SLICE_TIME, 100 ms). */
const READY_POLL_NS = 100_000_000;

/** Pieces copied at once when an error fails the job (QEMU mirror's MAX_IN_FLIGHT). */
const PIECES_IN_FLIGHT = 16;

/** Prefix of the job's own bitmap on the top node (QEMU's is anonymous; the layer has only named ones). */
const BITMAP_PREFIX = '#commit-active-';

/** The work of an active commit. */
export class ActiveCommitWork implements JobWork {
  readonly type = 'commit' as const;
  private readonly buffer = new Uint8Array(CHAIN_CHUNK);
  private shouldComplete = false;
  /** Where the next look for dirty bytes starts (QEMU's bitmap iterator: round the disk, not from 0 every time). */
  private cursor = 0;

  private readonly bitmap: DirtyBitmap;

  /** The bitmap records from here on, before the first look at the allocation: no write is missed. */
  constructor(
    private readonly host: JobHost,
    private readonly top: BlockNode,
    private readonly base: BlockNode,
    /** Hops from top to base. */
    private readonly limit: number,
    private readonly onError: JobErrorPolicy,
    private readonly release: () => Promise<void>,
    jobId: string,
    /** Makes the base read-only again if the job made it read-write. */
    private readonly restoreBase: () => Promise<void> = async () => {},
  ) {
    let name = `${BITMAP_PREFIX}${jobId}`;
    for (let i = 1; top.bitmaps.find(name) !== undefined; i++) name = `${BITMAP_PREFIX}${jobId}-${i}`;
    this.bitmap = top.bitmaps.add(name, { granularity: base.bitmaps.defaultGranularity() });
  }

  async run(job: Job): Promise<void> {
    const { top, bitmap } = this;
    const len = top.length;
    for (let offset = 0; offset < len; ) {
      if (job.isCancelled) return;
      const { copy, length } = await allocatedBetween(top, offset, Math.min(CHAIN_CHUNK * 64, len - offset), 0, this.limit);
      if (copy) bitmap.markDirty(offset, length);
      offset += length;
    }
    job.setRemaining(bitmap.count);
    if (this.onError === 'report' || this.onError === 'auto') return this.runOverlapped(job);
    for (;;) {
      if (job.isCancelled) return;
      const piece = this.nextDirty(bitmap, len);
      if (piece === null) {
        if (!job.isReady) job.transitionToReady();
        if (this.shouldComplete || job.cancelRequested) return;
        await job.sleep(READY_POLL_NS);
        continue;
      }
      const { offset, length } = piece;
      bitmap.markClean(offset, length);
      this.cursor = offset + length;
      if (!(await this.copy(job, offset, length))) {
        // Not at full speed round a piece that keeps failing.
        await job.sleep(READY_POLL_NS);
        continue;
      }
      job.addProgress(length);
      job.setRemaining(bitmap.count);
      await job.throttle(length);
    }
  }

  /**
   * The same loop with up to {@link PIECES_IN_FLIGHT} pieces copied at once (QEMU's mirror:
   * MAX_IN_FLIGHT operations of at most MAX_IO_BYTES), where an error fails the job. A dirty
   * piece over one still in flight waits for it, so an older copy never lands after a newer one.
   */
  private async runOverlapped(job: Job): Promise<void> {
    const { bitmap, top } = this;
    const len = top.length;
    // The base's files are flushed as the copy goes on: the flush at the pivot then has little left.
    const writeback = await EarlyWriteback.of(this.base);
    const flights = new CopyFlights(
      top,
      this.base,
      PIECES_IN_FLIGHT,
      FLIGHT_PIECE,
      (bytes) => {
        writeback.wrote(bytes);
        job.addProgress(bytes);
        job.setRemaining(bitmap.count + flights.bytesInFlight - bytes);
      },
      async (offset, length, op, e) => {
        bitmap.markDirty(offset, length);
        await job.onIoError(this.onError, op, e);
      },
    );
    let failure: { reason: unknown } | undefined;
    try {
      while (!flights.failed && !writeback.failed) {
        if (job.isCancelled) break;
        const piece = this.nextDirty(bitmap, len, FLIGHT_PIECE);
        if (piece === null) {
          if (!flights.idle) {
            await flights.settleOldest();
            continue;
          }
          if (!job.isReady) job.transitionToReady();
          if (this.shouldComplete || job.cancelRequested) break;
          await job.sleep(READY_POLL_NS);
          continue;
        }
        const busy = flights.overlapping(piece.offset, piece.length);
        if (busy !== null) {
          await busy;
          continue;
        }
        await flights.slot();
        const { offset, length } = piece;
        bitmap.markClean(offset, length);
        this.cursor = offset + length;
        flights.start(offset, length);
        await job.throttle(length);
      }
    } catch (reason) {
      failure = { reason };
    }
    // The pieces and the flush in flight settle before the job goes on; the first failure is the job's.
    for (const settle of [() => flights.settleAll(), () => writeback.settle()]) {
      try {
        await settle();
      } catch (reason) {
        failure ??= { reason };
      }
    }
    if (failure !== undefined) throw failure.reason;
  }

  complete(job: Job): void {
    this.shouldComplete = true;
    job.enter();
  }

  /** A soft cancel of a READY job ends it successfully without the pivot (QEMU mirror_cancel). */
  cancel(job: Job, force: boolean): boolean {
    return force || !job.isReady;
  }

  /** job-complete: the rest is copied with every user of the top drained, then they use the base (QEMU mirror_exit_common). */
  async prepare(job: Job): Promise<void> {
    if (!this.shouldComplete) return;
    const { top, base } = this;
    const bitmap = this.bitmap;
    await this.host.replaceNode(top, base, async () => {
      for (let piece = this.nextDirty(bitmap, top.length); piece !== null; piece = this.nextDirty(bitmap, top.length)) {
        bitmap.markClean(piece.offset, piece.length);
        await top.read(piece.offset, this.buffer.subarray(0, piece.length));
        await writeCopied(base, piece.offset, this.buffer.subarray(0, piece.length));
        job.addProgress(piece.length);
        job.setRemaining(bitmap.count);
      }
      await base.flush();
    });
  }

  /**
   * The base took the top's place: it keeps the top's mode (QEMU mirror_exit_common). A failed or
   * cancelled job leaves a base it made read-write so, as QEMU 7.2 does (qemu-storage-daemon shows it).
   */
  async commit(): Promise<void> {
    if (this.shouldComplete && this.top.readOnly) await this.restoreBase();
  }

  clean(): Promise<void> {
    return this.dispose();
  }

  /** Drops the job's bitmap and lets go of the nodes. */
  dispose(): Promise<void> {
    this.top.bitmaps.drop(this.bitmap);
    return this.release();
  }

  /** Copies one dirty piece; false when it must be tried again (an error under `stop`, the piece marked dirty again). */
  private async copy(job: Job, offset: number, length: number): Promise<boolean> {
    const part = this.buffer.subarray(0, length);
    let op: 'read' | 'write' = 'read';
    try {
      await this.top.read(offset, part);
      op = 'write';
      await writeCopied(this.base, offset, part);
      return true;
    } catch (e) {
      this.bitmap.markDirty(offset, length);
      // ignore: tried again later, as QEMU's mirror does (the range stays dirty); stop: after a resume.
      await job.onIoError(this.onError, op, e);
      return false;
    }
  }

  /** The next dirty piece at or after the cursor (wrapping round), at most `most` bytes. */
  private nextDirty(bitmap: DirtyBitmap, len: number, most = CHAIN_CHUNK): { offset: number; length: number } | null {
    const found = bitmap.nextDirtyExtent(this.cursor, len) ?? (this.cursor > 0 ? bitmap.nextDirtyExtent(0, len) : null);
    if (found === null) return null;
    return { offset: found.offset, length: Math.min(found.length, most) };
  }
}
