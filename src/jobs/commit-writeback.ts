// Early write-back of a commit's target: the copied bytes are made durable while the copy goes
// on, so that the flush the job owes before the chain is relinked (the base holds everything
// before anything points at it) finds little left to write. A flush of the files under the
// base is a plain fdatasync: it adds durability and never reorders what the format writes.
import type { BlockNode } from '../node/node.js';

/** Bytes copied between two early flushes. */
export const WRITEBACK_EVERY = 64 * 1024 * 1024;

/**
 * The children holding `node`'s own bytes (`file`, `data-file`: every child but `backing`). A
 * flush of them goes through any filter there (blkdebug, throttle) down to the file's fdatasync,
 * without the format's metadata write-back.
 */
export function storageChildren(node: BlockNode): BlockNode[] {
  const out: BlockNode[] = [];
  for (const [role, child] of node.children) if (role !== 'backing' && !out.includes(child)) out.push(child);
  return out;
}

/**
 * Flushes the files under a target every {@link WRITEBACK_EVERY} bytes written to it, one flush
 * at a time, in the background. A failed flush is kept and thrown by {@link settle}: an
 * fdatasync error is reported once, so it must not be lost (the final flush could then succeed
 * over data that never reached the disk).
 */
export class EarlyWriteback {
  private pending: Promise<void> | null = null;
  private since = 0;
  private failure: { reason: unknown } | undefined;

  constructor(
    private readonly files: readonly BlockNode[],
    private readonly every = WRITEBACK_EVERY,
  ) {}

  /** Whether a flush failed (the job should stop copying: it fails at its end). */
  get failed(): boolean {
    return this.failure !== undefined;
  }

  /** Counts `bytes` written to the target (settled writes: a flush covers only those); starts a flush when enough went since the last one. */
  wrote(bytes: number): void {
    this.since += bytes;
    if (this.since < this.every || this.pending !== null || this.files.length === 0) return;
    this.since = 0;
    this.pending = this.flushFiles().then(
      () => {
        this.pending = null;
      },
      (reason: unknown) => {
        this.failure ??= { reason };
        this.pending = null;
      },
    );
  }

  /** Waits for the flush in flight; throws the first failure of any. */
  async settle(): Promise<void> {
    if (this.pending !== null) await this.pending;
    const failure = this.failure;
    this.failure = undefined;
    if (failure !== undefined) throw failure.reason;
  }

  private async flushFiles(): Promise<void> {
    for (const f of this.files) await f.flush();
  }
}
