/**
 * Copying clusters of one node to another, each exactly once (QEMU block/block-copy.c): a set
 * of clusters still to copy, claimed by whichever asks first — a backup job's sweep or a guest
 * write's copy-before-write. A request for a cluster whose copy is in flight waits for that copy;
 * a failed copy puts its clusters back.
 */
import { BlockError } from '../errors.js';
import { GranuleSet } from '../node/granule-set.js';
import type { BlockNode } from '../node/node.js';

/** QEMU's smallest block-copy cluster (BLOCK_COPY_CLUSTER_SIZE_DEFAULT): never below the target's cluster. */
export const MIN_COPY_CLUSTER = 64 * 1024;
/** Bytes one task moves at most when no `maxChunk` is given (QEMU BLOCK_COPY_MAX_BUFFER). */
export const DEFAULT_COPY_CHUNK = 1024 * 1024;

/** A copy that failed, and on which side (a backup job picks on-source-error or on-target-error by it). */
export class CopyFailure extends Error {
  /** The cluster after the run that failed: where a sweep goes on. */
  resumeAt = -1;

  constructor(
    readonly side: 'read' | 'write',
    override readonly cause: unknown,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}

/** How a {@link BlockCopy} copies. */
export interface BlockCopyOptions {
  /** Bytes per task at most (rounded down to clusters, at least one, at most 1 MiB or one cluster); 0 or absent: that most. */
  maxChunk?: number;
  /** Write the target's clusters compressed (qcow2). */
  compress?: boolean;
  /** Called with the bytes of every copied piece (the job's progress). */
  onCopied?: (bytes: number) => void;
}

interface Task {
  first: number;
  end: number;
  done: Promise<void>;
}

/** The copy cluster QEMU picks for a target: its cluster size, at least 64 KiB. */
export function copyClusterSize(target: BlockNode): number {
  const cluster = target.info().clusterSize;
  return typeof cluster === 'number' && cluster > MIN_COPY_CLUSTER ? cluster : MIN_COPY_CLUSTER;
}

/** The clusters of `source` still to copy to `target`, and the copying of them. */
export class BlockCopy {
  /** Bytes of one cluster (the unit of claiming). */
  readonly clusterSize: number;
  /** Clusters still to copy. */
  readonly toCopy: GranuleSet;
  /** Bytes of the source (the last cluster may be shorter). */
  readonly length: number;
  private readonly chunkClusters: number;
  private readonly compress: boolean;
  private readonly targetCluster: number;
  private readonly onCopied: (bytes: number) => void;
  private tasks: Task[] = [];
  /** The sweep's buffer, reused from task to task (guest-write copies bring their own). */
  private sweepBuffer: Uint8Array | null = null;

  constructor(
    readonly source: BlockNode,
    readonly target: BlockNode,
    options: BlockCopyOptions = {},
  ) {
    this.clusterSize = copyClusterSize(target);
    this.length = source.length;
    this.toCopy = new GranuleSet(Math.ceil(this.length / this.clusterSize));
    // QEMU's copy size: at most 1 MiB (or one cluster if larger), whatever max-chunk asks, so a buffer stays bounded.
    const limit = Math.max(DEFAULT_COPY_CHUNK, this.clusterSize);
    const chunk = options.maxChunk !== undefined && options.maxChunk > 0 ? Math.min(options.maxChunk, limit) : limit;
    this.compress = options.compress === true;
    // A compressed write is one target cluster: QEMU copies cluster by cluster then.
    this.chunkClusters = this.compress ? 1 : Math.max(1, Math.floor(chunk / this.clusterSize));
    const tc = target.info().clusterSize;
    this.targetCluster = typeof tc === 'number' && tc > 0 ? tc : this.clusterSize;
    this.onCopied = options.onCopied ?? (() => {});
  }

  /** Bytes still to copy, whole clusters counted (QEMU bdrv_get_dirty_count of the copy bitmap). */
  get remaining(): number {
    return this.toCopy.count * this.clusterSize;
  }

  /** Bytes being copied right now. */
  get inFlight(): number {
    let n = 0;
    for (const t of this.tasks) n += (t.end - t.first) * this.clusterSize;
    return n;
  }

  /** Marks every cluster to copy (sync=full, top, none). */
  markAll(): void {
    this.toCopy.add(0, this.toCopy.size);
  }

  /** Marks the clusters that cover `[offset, offset+length)`. */
  mark(offset: number, length: number): void {
    if (length > 0) this.toCopy.add(Math.floor(offset / this.clusterSize), Math.ceil(Math.min(this.length, offset + length) / this.clusterSize));
  }

  /** Drops the clusters wholly inside `[offset, offset+length)` (an unallocated range of sync=top); returns the bytes dropped. */
  unmark(offset: number, length: number): number {
    const first = Math.ceil(offset / this.clusterSize);
    const end = offset + length >= this.length ? this.toCopy.size : Math.floor((offset + length) / this.clusterSize);
    if (end <= first) return 0;
    const before = this.toCopy.count;
    this.toCopy.remove(first, end);
    return (before - this.toCopy.count) * this.clusterSize;
  }

  /** Waits until every copy in flight has settled. */
  async settled(): Promise<void> {
    while (this.tasks.length > 0) await Promise.allSettled(this.tasks.map((t) => t.done));
  }

  /**
   * Copy-before-write of a guest request over `[offset, offset+length)`: every cluster of the
   * range not yet copied is copied now, and copies in flight there are waited for. Rejects with
   * a {@link CopyFailure} when a copy fails (the guest write must not go on: QEMU's default
   * on-cbw-error=break-guest-write).
   */
  async beforeWrite(offset: number, length: number): Promise<void> {
    const first = Math.floor(offset / this.clusterSize);
    const end = Math.min(this.toCopy.size, Math.ceil((offset + length) / this.clusterSize));
    for (;;) {
      const next = this.toCopy.next(first, true, end);
      if (next < end) {
        const stop = Math.min(this.toCopy.next(next, false, end), next + this.chunkClusters);
        await this.copy(next, stop, null);
        continue;
      }
      // Most writes land on clusters copied long ago: no copy in flight, nothing allocated.
      const busy = this.overlapping(first, end);
      if (busy === null) return;
      // A copy that fails puts its clusters back: look again once it settles.
      await busy;
    }
  }

  /** The first copy in flight over clusters `[first, end)` (its settling), or null. */
  private overlapping(first: number, end: number): Promise<void> | null {
    for (const t of this.tasks) if (t.first < end && first < t.end) return t.done;
    return null;
  }

  /**
   * The sweep's next step: copies the first run of clusters to copy at or after cluster
   * `from` (at most one chunk). Returns the cluster after it, or -1 if none is left from there.
   */
  async copyNext(from: number): Promise<number> {
    const first = this.toCopy.next(from, true);
    if (first >= this.toCopy.size) return -1;
    const stop = Math.min(this.toCopy.next(first, false), first + this.chunkClusters);
    this.sweepBuffer ??= new Uint8Array(this.chunkClusters * this.clusterSize);
    await this.copy(first, stop, this.sweepBuffer);
    return stop;
  }

  /** Claims clusters `[first, end)`, copies them, and gives them back if the copy fails. */
  private async copy(first: number, end: number, buffer: Uint8Array | null): Promise<void> {
    this.toCopy.remove(first, end);
    let finish!: () => void;
    const task: Task = { first, end, done: new Promise<void>((r) => (finish = r)) };
    this.tasks.push(task);
    try {
      const offset = first * this.clusterSize;
      const bytes = Math.min(this.length, end * this.clusterSize) - offset;
      await this.copyBytes(offset, bytes, buffer);
      this.onCopied(bytes);
    } catch (e) {
      this.toCopy.add(first, end);
      const failure = e instanceof CopyFailure ? e : new CopyFailure('read', e);
      failure.resumeAt = end;
      throw failure;
    } finally {
      this.tasks.splice(this.tasks.indexOf(task), 1);
      finish();
    }
  }

  /** Reads `[offset, offset+bytes)` of the source and writes it to the target (zeroes as write-zeroes, as QEMU's block-copy). */
  private async copyBytes(offset: number, bytes: number, buffer: Uint8Array | null): Promise<void> {
    let zero = false;
    try {
      const status = await this.source.blockStatus(offset, bytes);
      zero = status.zero && status.length >= bytes;
    } catch {
      // No block status: copy the data.
    }
    if (zero) {
      await this.targetWrite(() => this.target.writeZeroes(offset, bytes));
      return;
    }
    const data = buffer === null ? new Uint8Array(bytes) : buffer.subarray(0, bytes);
    try {
      await this.source.read(offset, data);
    } catch (e) {
      throw new CopyFailure('read', e);
    }
    if (!this.compress) {
      await this.targetWrite(() => this.target.write(offset, data));
      return;
    }
    const tc = this.targetCluster;
    for (let at = 0; at < bytes; at += tc) {
      const piece = data.subarray(at, Math.min(bytes, at + tc));
      await this.targetWrite(() => this.target.writeCompressed(offset + at, piece));
    }
  }

  private async targetWrite(write: () => Promise<void>): Promise<void> {
    try {
      await write();
    } catch (e) {
      throw new CopyFailure('write', e);
    }
  }
}

/** The error a backup refuses a compressed target with when its driver cannot compress. */
export function compressUnsupported(targetName: string): BlockError {
  return new BlockError('ENOTSUP', `Compression is not supported for this drive ${targetName}`, { field: 'compress' });
}
