/**
 * The backup job (QEMU block/backup.c with block/copy-before-write.c): the target becomes the
 * source as it was when the job started, whatever the guest writes meanwhile. A copy-before-write
 * hook on the source copies a cluster's old contents out before a guest write overwrites it; the
 * job's sweep copies the rest (sync=full: everything; top: what the top node holds; bitmap /
 * incremental: the clusters a dirty bitmap marks; none: nothing, only what the guest overwrites,
 * until cancelled). Checks in QEMU's order and with its messages (blockdev.c do_backup_common,
 * backup_job_create).
 */
import { BlockError } from '../errors.js';
import type { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { BlockNode } from '../node/node.js';
import { type BitmapSyncMode, BackupSyncBitmap } from './backup-bitmap.js';
import { BlockCopy, CopyFailure, compressUnsupported, copyClusterSize } from './block-copy.js';
import type { JobHost } from './host.js';
import type { Job, JobErrorPolicy, JobWork } from './job.js';
import { type CommonJobSpec, defaultJobId, type JobErrorPolicies, nodeByName } from './job-spec.js';
import { filterName } from './job-filter.js';
import { isMirrorNode } from './mirror.js';
import { holdForJob } from './root-node.js';

export type { BitmapSyncMode } from './backup-bitmap.js';

/** QAPI MirrorSyncMode as backup takes it. */
export type BackupSync = 'full' | 'top' | 'none' | 'incremental' | 'bitmap';

/** QAPI BackupPerf (x-perf): tuning of the copy. */
export interface BackupPerf {
  /** Parallel copies of the sweep (QEMU default 64); 1 … 2^31-1. This sweep copies one chunk at a time; the value is checked as QEMU checks it. */
  maxWorkers?: number;
  /** Bytes one copy moves at most; 0: no limit (1 MiB buffers). */
  maxChunk?: number;
  /** QEMU's copy_file_range offload; accepted, ignored (data goes through memory here). */
  useCopyRange?: boolean;
}

/** A backup job (QMP blockdev-backup). */
export interface BackupJobSpec extends CommonJobSpec, JobErrorPolicies {
  type: 'backup';
  /** The source: a node name or the id of a drive (its root). */
  device: string;
  /** The node that receives the copy (a node name, or an open node: drive-backup's new image; the job takes a reference): same size as the source. */
  target: string | BlockNode;
  sync: BackupSync;
  /** A dirty bitmap of the source: what sync=bitmap/incremental copies, and what `bitmapMode` sets when the job ends. */
  bitmap?: string;
  /** What becomes of `bitmap` at the end (required with a bitmap; incremental means on-success). */
  bitmapMode?: BitmapSyncMode;
  /** Write the target compressed (its driver must be able to: qcow2). */
  compress?: boolean;
  /** QEMU's name for its copy-before-write filter node; checked for uniqueness, no node is made here (the filter is a hook on the source). */
  filterNodeName?: string;
  perf?: BackupPerf;
}

const INT_MAX = 2 ** 31 - 1;

function invalid(message: string, field: string): BlockError {
  return new BlockError('EINVAL', message, { field });
}

/** What a checked backup will run with. */
interface BackupPlan {
  id: string;
  source: BlockNode;
  target: BlockNode;
  sync: 'full' | 'top' | 'none' | 'bitmap';
  bitmap: DirtyBitmap | undefined;
  bitmapMode: BitmapSyncMode;
  compress: boolean;
  maxChunk: number;
  onSourceError: JobErrorPolicy;
  onTargetError: JobErrorPolicy;
  speed: number;
  autoFinalize: boolean;
  autoDismiss: boolean;
}

/** do_backup_common's bitmap checks: which sync and bitmap mode the job runs with. */
function checkBitmapArgs(source: BlockNode, spec: BackupJobSpec): { sync: BackupPlan['sync']; bitmap: DirtyBitmap | undefined; mode: BitmapSyncMode | undefined } {
  let sync = spec.sync;
  let mode = spec.bitmapMode;
  if ((sync === 'bitmap' || sync === 'incremental') && spec.bitmap === undefined) throw invalid(`must provide a valid bitmap name for '${sync}' sync mode`, 'bitmap');
  if (sync === 'incremental') {
    if (mode !== undefined && mode !== 'on-success') throw invalid(`Bitmap sync mode must be 'on-success' when using sync mode 'incremental'`, 'bitmap-mode');
    sync = 'bitmap';
    mode = 'on-success';
  }
  let bitmap: DirtyBitmap | undefined;
  if (spec.bitmap !== undefined) {
    bitmap = source.bitmaps.find(spec.bitmap);
    if (bitmap === undefined) throw new BlockError('ENOENT', `Bitmap '${spec.bitmap}' could not be found`, { field: 'bitmap' });
    if (mode === undefined) throw invalid('Bitmap sync mode must be given when providing a bitmap', 'bitmap-mode');
    bitmap.check('record');
    if (sync === 'none') throw invalid(`sync mode '${sync}' does not produce meaningful bitmap outputs`, 'sync');
    if (mode === 'never' && sync !== 'bitmap') throw invalid(`Bitmap sync mode '${mode}' has no meaningful effect when combined with sync mode '${sync}'`, 'bitmap-mode');
  }
  if (spec.bitmap === undefined && mode !== undefined) throw invalid('Cannot specify bitmap sync mode without a bitmap', 'bitmap-mode');
  return { sync, bitmap, mode };
}

/**
 * The parent of `node` on a path down from `top` through children written through (not `backing`:
 * a target backed by its source, image fleecing, is fine), and its child role.
 */
function parentOnPath(top: BlockNode, node: BlockNode, seen = new Set<BlockNode>()): { node: BlockNode; role: string } | undefined {
  if (seen.has(top)) return undefined;
  seen.add(top);
  for (const [role, child] of top.children) {
    if (role === 'backing') continue;
    if (child === node) return { node: top, role };
    const found = parentOnPath(child, node, seen);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** Checks a backup as QEMU does, in its order; nothing is changed. */
function planBackup(host: JobHost, spec: BackupJobSpec): BackupPlan {
  const source = nodeByName(host, spec.device, 'device');
  const target = typeof spec.target === 'string' ? nodeByName(host, spec.target, 'target') : spec.target;
  // QEMU's op blockers: a running mirror's nodes are neither source nor target of a backup.
  for (const [n, field] of [[source, 'device'], [target, 'target']] as const) {
    if (isMirrorNode(n)) throw new BlockError('EBUSY', `Node '${n.name}' is busy: block device is in use by block job: mirror`, { field });
  }
  // A target above the source would copy into itself: each write to it, on its way down to the
  // source, would first copy the old data into it again (a write that never ends). QEMU refuses
  // the copy-before-write filter's permissions.
  const above = parentOnPath(target, source);
  if (above !== undefined) {
    throw new BlockError(
      'EINVAL',
      `Permission conflict on node '${source.name}': permissions 'write' are both required by node '${above.node.name}' (uses node '${source.name}' as '${above.role}' child) and unshared by node '${filterName(spec.filterNodeName)}' (uses node '${source.name}' as 'file' child).`,
      { field: 'target' },
    );
  }
  const { sync, bitmap, mode } = checkBitmapArgs(source, spec);
  if (source === target) throw invalid('Source and target cannot be the same', 'target');
  const compress = spec.compress === true;
  if (compress && !target.canWriteCompressed) {
    throw compressUnsupported(host.drivesOn(target).find((d) => host.isListedDrive(d))?.id ?? '');
  }
  const workers = spec.perf?.maxWorkers ?? 64;
  if (!Number.isSafeInteger(workers) || workers < 1 || workers > INT_MAX) throw invalid(`max-workers must be between 1 and ${INT_MAX}`, 'x-perf.max-workers');
  const maxChunk = spec.perf?.maxChunk ?? 0;
  if (!Number.isSafeInteger(maxChunk) || maxChunk < 0) throw invalid('max-chunk must be zero (which means no limit) or positive', 'x-perf.max-chunk');
  if (bitmap !== undefined && mode !== 'never') bitmap.check('modify');
  if (source.length !== target.length) throw invalid('Source and target image have different sizes', 'target');
  if (spec.filterNodeName !== undefined && host.findNode(spec.filterNodeName) !== undefined) {
    throw new BlockError('EEXIST', `Could not create node: Duplicate nodes with node-name='${spec.filterNodeName}'`, { field: 'filter-node-name' });
  }
  const cluster = copyClusterSize(target);
  if (maxChunk > 0 && maxChunk < cluster) throw invalid(`Required max-chunk (${maxChunk}) is less than backup cluster size (${cluster})`, 'x-perf.max-chunk');
  const id = defaultJobId(host, source, spec.jobId);
  host.jobs.checkId(id);
  const speed = spec.speed ?? 0;
  if (!Number.isSafeInteger(speed) || speed < 0) throw invalid(`Parameter 'speed' expects a non-negative value`, 'speed');
  return {
    id,
    source,
    target,
    sync,
    bitmap,
    bitmapMode: mode ?? 'never',
    compress,
    maxChunk,
    onSourceError: spec.onSourceError ?? 'report',
    onTargetError: spec.onTargetError ?? 'report',
    speed,
    autoFinalize: spec.autoFinalize ?? true,
    autoDismiss: spec.autoDismiss ?? true,
  };
}

/** What a backup job does, from start to clean. */
class BackupWork implements JobWork {
  readonly type = 'backup' as const;
  readonly copy: BlockCopy;
  private readonly syncBitmap: BackupSyncBitmap | null;
  private job: Job | null = null;
  private hooked = false;
  private readonly unhold: () => void;

  constructor(private readonly plan: BackupPlan) {
    this.copy = new BlockCopy(plan.source, plan.target, {
      maxChunk: plan.maxChunk,
      compress: plan.compress,
      onCopied: (bytes) => this.job?.addProgress(bytes),
    });
    this.syncBitmap = plan.bitmap === undefined ? null : new BackupSyncBitmap(plan.bitmap, plan.bitmapMode);
    // The point in time: from here every write to the source waits for its old clusters to be copied.
    if (plan.sync === 'bitmap') {
      for (const [first, end] of plan.bitmap!.granules.runs()) {
        const g = plan.bitmap!.granularity;
        this.copy.mark(first * g, Math.min(plan.bitmap!.size, end * g) - first * g);
      }
    } else {
      this.copy.markAll();
    }
    plan.source.ref();
    plan.target.ref();
    // Neither is a root node while the job runs (QEMU: the copy-before-write filter above the source, the job above the target).
    this.unhold = holdForJob([plan.source, plan.target]);
    plan.source.setBeforeWrite(this.beforeWrite);
    this.hooked = true;
  }

  private readonly beforeWrite = (offset: number, length: number): Promise<void> => {
    this.syncBitmap?.noteWrite(offset, length);
    return this.copy.beforeWrite(offset, length);
  };

  attach(job: Job): void {
    this.job = job;
    job.setRemaining(this.copy.remaining);
  }

  async run(job: Job): Promise<void> {
    // QEMU creates the job inside a drained section: its first pause point comes before any copying.
    await job.pausePoint();
    job.setRemaining(this.copy.remaining + this.copy.inFlight);
    if (this.plan.sync === 'top') await this.dropUnallocated(job);
    if (this.plan.sync === 'none') {
      // Copy-before-write does the work; the job waits to be cancelled (QEMU's sync=none).
      while (!job.isCancelled) await job.idle();
      return;
    }
    await this.sweep(job);
  }

  /** sync=top: clusters the source's top node does not hold are not copied (QEMU block_copy_reset_unallocated). */
  private async dropUnallocated(job: Job): Promise<void> {
    const source = this.plan.source;
    // A node without a backing file holds every cluster (QEMU reports all of it allocated).
    if (source.child('backing') === undefined) return;
    for (let offset = 0; offset < this.copy.length && !job.isCancelled; ) {
      await job.pausePoint();
      const status = await source.blockStatus(offset, this.copy.length - offset);
      // Held by the top node: allocated there (depth 0); deeper data comes from the backing chain.
      if (!status.allocated || status.depth > 0) {
        this.copy.unmark(offset, status.length);
        job.setRemaining(this.copy.remaining + this.copy.inFlight);
      }
      offset += status.length;
    }
  }

  /** The job's own copying: passes over the clusters left until none is (copy-before-write takes its share meanwhile). */
  private async sweep(job: Job): Promise<void> {
    let from = 0;
    let progressed = false;
    while (!job.isCancelled) {
      let next: number;
      try {
        const before = job.progress.current;
        next = await this.copy.copyNext(from);
        if (next >= 0) {
          progressed ||= job.progress.current > before;
          await job.throttle(job.progress.current - before);
        }
      } catch (e) {
        if (!(e instanceof CopyFailure)) throw e;
        const policy = e.side === 'read' ? this.plan.onSourceError : this.plan.onTargetError;
        await job.onIoError(policy, e.side, e.cause);
        // Retried on the next pass: QEMU retries a failed copy under `ignore` as under `stop`.
        next = e.resumeAt;
      }
      if (next >= 0) {
        from = next;
        continue;
      }
      await this.copy.settled();
      if (this.copy.toCopy.count === 0) return;
      // A pass that copied nothing (every copy failing under `ignore`) waits a slice before the next.
      if (!progressed) await job.sleep(100_000_000);
      from = 0;
      progressed = false;
    }
  }

  cancel(): boolean {
    return true;
  }

  async commit(): Promise<void> {
    this.syncBitmap?.settle(true, this.copy.toCopy, this.copy.clusterSize);
  }

  async abort(): Promise<void> {
    this.syncBitmap?.settle(false, this.copy.toCopy, this.copy.clusterSize);
  }

  async clean(): Promise<void> {
    await this.copy.settled();
    if (this.hooked) {
      this.plan.source.setBeforeWrite(null);
      this.hooked = false;
    }
    this.syncBitmap?.release();
    try {
      // A job that copied nothing (cancelled before it ran) has nothing to make durable.
      if (this.job !== null && this.job.progress.current > 0) await this.plan.target.flush();
    } finally {
      this.unhold();
      await this.plan.target.unref();
      await this.plan.source.unref();
    }
  }
}

/** A checked backup: `create` makes the job (CREATED) and installs copy-before-write, the point in time. */
export interface PreparedBackup {
  readonly id: string;
  create(): Job;
}

/** Checks a backup (QEMU's order and messages, refusing with a BlockError) without making it. */
export function prepareBackup(host: JobHost, spec: BackupJobSpec): PreparedBackup {
  const plan = planBackup(host, spec);
  return {
    id: plan.id,
    create: () => {
      const work = new BackupWork(plan);
      let job: Job;
      try {
        job = host.jobs.create(plan.id, work, { speed: plan.speed, autoFinalize: plan.autoFinalize, autoDismiss: plan.autoDismiss });
      } catch (e) {
        void work.clean();
        throw e;
      }
      work.attach(job);
      return job;
    },
  };
}

/** Starts a backup job (layer.startJob({ type: 'backup', … })). */
export function startBackup(host: JobHost, spec: BackupJobSpec): Job {
  const job = prepareBackup(host, spec).create();
  job.start();
  return job;
}
