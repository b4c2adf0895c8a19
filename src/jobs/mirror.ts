// The mirror job (QEMU block/mirror.c, blockdev-mirror): what a mirror takes, QEMU's checks
// when it starts, and its finishing steps (the pivot). The copying itself is in mirror-copy.ts.
import type { Drive } from '../drive.js';
import { BlockError } from '../errors.js';
import type { BlockNode } from '../node/node.js';
import type { JobHost } from './host.js';
import type { Job, JobWork } from './job.js';
import { mirrorTopNode } from './mirror-top.js';
import { addJobFilter, checkFilterName, dropFilterOnClean, filterName, registerFilter, unregisterFilter } from './job-filter.js';
import { DEFAULT_MIRROR_BUF_SIZE, MirrorCopy, type MirrorSettings, type SyncMode } from './mirror-copy.js';
import { type CommonJobSpec, defaultJobId, type JobErrorPolicies, nodeByName } from './job-spec.js';

/** Granularity bounds of a mirror's dirty bitmap (QEMU: 512 B … 64 MiB, a power of two). */
export const MIN_MIRROR_GRANULARITY = 512;
export const MAX_MIRROR_GRANULARITY = 64 << 20;
/** Largest `bufSize` taken: the copy buffers are allocated up to it. */
export const MAX_MIRROR_BUF_SIZE = 1 << 30;

/** A mirror: copy `device` to `target` while it is in use, then (on complete) put `target` in its place. */
export interface MirrorJobSpec extends CommonJobSpec, JobErrorPolicies {
  type: 'mirror';
  /** The source: a node name, or the id of a drive (its root). */
  device: string;
  /** The target (of the same size): a node name, the id of a drive, or an open node (drive-mirror's new image; the job takes a reference). */
  target: string | BlockNode;
  /** What is copied first: `full` everything, `top` what the source holds itself (not its backing chain), `none` only new writes. */
  sync: SyncMode | 'incremental' | 'bitmap';
  /** A node to replace by the target on complete instead of the source (QEMU `replaces`). */
  replaces?: string;
  /** Bytes per bit of the dirty bitmap: a power of two, 512 B … 64 MiB; default the target's cluster size (4 KiB … 64 KiB), else 64 KiB. */
  granularity?: number;
  /** Bytes of copies in flight at most (default 16 MiB); rounded up to the granularity. */
  bufSize?: number;
  /** QEMU's copy modes: `background` (guest writes are copied later, from the dirty bitmap) or `write-blocking` (they reach the target before they complete). */
  copyMode?: 'background' | 'write-blocking';
  /** The target is a new image that reads zeroes (drive-mirror's): a full mirror copies only what the source's chain allocates. */
  targetZeroInit?: boolean;
  /** Made the target's backing node at the pivot (drive-mirror's new image over the source's chain: QEMU's MIRROR_SOURCE_BACKING_CHAIN). */
  targetBacking?: BlockNode;
  /** Name of the mirror_top filter node above the source (QEMU's `#blockNNN` when none is given): write-blocking mode writes through it, background mode lists it. */
  filterNodeName?: string;
}

/** Sources with a mirror running, so a second one is refused as QEMU refuses it (the source is then below a filter). */
const mirrored = new WeakSet<BlockNode>();
/** Sources and targets of running mirrors (QEMU's op blockers on a job's nodes). */
const inUse = new WeakSet<BlockNode>();

/** Whether a running mirror copies from or to `node` (QEMU's op blockers: block_resize refuses it). */
export function isMirrorNode(node: BlockNode): boolean {
  return inUse.has(node);
}

/** Checks a granularity as blockdev-mirror does (QEMU's messages). */
function checkMirrorGranularity(g: number): number {
  if (!Number.isSafeInteger(g) || g < MIN_MIRROR_GRANULARITY || g > MAX_MIRROR_GRANULARITY) {
    throw new BlockError('EINVAL', "Parameter 'granularity' expects a value in range [512B, 64MB]", { field: 'granularity' });
  }
  if ((g & (g - 1)) !== 0) throw new BlockError('EINVAL', "Parameter 'granularity' expects a power of 2", { field: 'granularity' });
  return g;
}

/** Starts a mirror job on the host's nodes (QEMU blockdev-mirror). */
export async function startMirror(host: JobHost, spec: MirrorJobSpec): Promise<Job> {
  const source = nodeByName(host, spec.device, 'device');
  const target = typeof spec.target === 'string' ? nodeByName(host, spec.target, 'target') : spec.target;
  if (!host.isRootNode(source)) throw new BlockError('EBUSY', 'Need a root block node', { field: 'device' });
  let replaces: BlockNode | undefined;
  if (spec.replaces !== undefined) {
    replaces = host.findNode(spec.replaces);
    if (replaces === undefined) throw new BlockError('ENOENT', `Failed to find node with node-name='${spec.replaces}'`, { field: 'replaces' });
    if (replaces.length !== source.length) throw new BlockError('EINVAL', 'Replacing this node would result in a different virtual size', { field: 'replaces' });
  }
  if (spec.granularity !== undefined) checkMirrorGranularity(spec.granularity);
  if (inUse.has(target)) throw new BlockError('EBUSY', `Node '${target.name}' is busy: block device is in use by block job: mirror`, { field: 'target' });
  const sync = spec.sync;
  if (sync === 'incremental' || sync === 'bitmap') throw new BlockError('ENOTSUP', `Sync mode '${sync}' not supported`, { field: 'sync' });
  if (sync !== 'full' && sync !== 'top' && sync !== 'none') throw new BlockError('EINVAL', `Parameter 'sync' does not accept value '${String(sync)}'`, { field: 'sync' });
  const speed = spec.speed ?? 0;
  if (!Number.isSafeInteger(speed) || speed < 0) throw new BlockError('EINVAL', "Parameter 'speed' expects a non-negative value", { field: 'speed' });
  const copyMode = spec.copyMode ?? 'background';
  if (copyMode !== 'background' && copyMode !== 'write-blocking') throw new BlockError('EINVAL', `Parameter 'copy-mode' does not accept value '${String(copyMode)}'`, { field: 'copy-mode' });
  const bufAsked = spec.bufSize ?? 0;
  if (!Number.isSafeInteger(bufAsked) || bufAsked < 0) throw new BlockError('EINVAL', "Invalid parameter 'buf-size'", { field: 'buf-size' });
  if (bufAsked > MAX_MIRROR_BUF_SIZE) throw new BlockError('EINVAL', `Parameter 'buf-size' expects a value of at most ${MAX_MIRROR_BUF_SIZE}`, { field: 'buf-size' });
  if (source === target) throw new BlockError('EINVAL', "Can't mirror node into itself", { field: 'target' });
  if (target.readOnly) throw new BlockError('EROFS', `Node '${target.name}' is read only`, { field: 'target' });
  const granularity = spec.granularity ?? target.bitmaps.defaultGranularity();
  const bufSize = Math.ceil((bufAsked || DEFAULT_MIRROR_BUF_SIZE) / granularity) * granularity;
  // sync=top of a node without a backing chain is a full copy (QEMU does the same).
  const base = sync === 'top' ? source.child('backing') : undefined;
  const mode: SyncMode = sync === 'top' && base === undefined ? 'full' : sync;
  checkFilterName(host, spec.filterNodeName);
  const id = defaultJobId(host, source, spec.jobId);
  host.jobs.checkId(id);
  const work = new MirrorWork(host, source, target, replaces, spec.targetBacking, {
    sync: mode,
    granularity,
    bufSize,
    onSourceError: spec.onSourceError ?? 'report',
    onTargetError: spec.onTargetError ?? 'report',
    targetZeroInit: spec.targetZeroInit === true,
    writeBlocking: copyMode === 'write-blocking',
  });
  const name = filterName(spec.filterNodeName);
  let dropFilter: (() => Promise<void>) | undefined;
  try {
    if (copyMode === 'write-blocking') await work.insertFilter(name);
    else dropFilter = addJobFilter(host, 'mirror_top', name, source, source.readOnly);
    if (dropFilter !== undefined) dropFilterOnClean(work, dropFilter);
    return host.jobs.start(id, work, { speed, autoFinalize: spec.autoFinalize, autoDismiss: spec.autoDismiss });
  } catch (e) {
    await dropFilter?.();
    await work.clean();
    throw e;
  }
}

/** The job's JobWork: the copy, then QEMU's mirror_exit_common as prepare/abort. */
class MirrorWork implements JobWork {
  readonly type = 'mirror';
  private readonly copy: MirrorCopy;
  /** job-complete was asked: pivot at the end (a soft cancel ends without). */
  private completeRequested = false;
  /** Drained drives on the source, from the last copy until the pivot is done. */
  private drainEnds: (() => void)[] = [];
  private finished = false;
  /** The write-blocking filter the source's users write through, while the job runs. */
  private filter: BlockNode | null = null;

  constructor(
    private readonly host: JobHost,
    private readonly source: BlockNode,
    private readonly target: BlockNode,
    private readonly replaces: BlockNode | undefined,
    private readonly targetBacking: BlockNode | undefined,
    settings: MirrorSettings,
  ) {
    source.ref();
    target.ref();
    replaces?.ref();
    mirrored.add(source);
    inUse.add(source);
    inUse.add(target);
    // The bitmap records from now on, so sync=none copies every write since the start.
    this.copy = new MirrorCopy(source, target, settings);
  }

  /** Puts the write-blocking filter above the source: every drive on the source moves onto it (drained). */
  async insertFilter(name: string): Promise<void> {
    this.filter = mirrorTopNode(name, this.source, this.copy);
    registerFilter(this.host.jobs, this.filter);
    await this.host.replaceNode(this.source, this.filter);
  }

  async run(job: Job): Promise<void> {
    await this.copy.run(job, {
      shouldComplete: () => this.completeRequested || job.cancelRequested,
      quiesce: () => this.quiesce(),
      release: () => this.endDrains(),
    });
  }

  complete(job: Job): void {
    this.completeRequested = true;
    job.enter();
  }

  cancel(job: Job, force: boolean): boolean {
    // Before READY any cancel is a real one; after, a soft cancel completes without the pivot.
    return force || !job.isReady;
  }

  async prepare(job: Job): Promise<void> {
    await this.finish(!job.isCancelled && this.completeRequested);
  }

  async abort(): Promise<void> {
    await this.finish(false);
  }

  clean(): Promise<void> {
    return this.finish(false);
  }

  /** Holds every user of the node that will be replaced: nothing reaches it until the pivot is done. */
  private async quiesce(): Promise<void> {
    const drives: Drive[] = this.host.drivesOn(this.replaces ?? this.filter ?? this.source);
    for (const d of drives) this.drainEnds.push(await d.drainBegin());
  }

  private endDrains(): void {
    const ends = this.drainEnds;
    this.drainEnds = [];
    for (const end of ends) end();
  }

  /** Pivots when asked (every drive on the replaced node moves to the target), then lets go of everything, once. */
  private async finish(pivot: boolean): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    try {
      this.copy.release();
      if (pivot && this.targetBacking !== undefined) await this.target.swapBacking(this.targetBacking)?.unref();
      if (pivot) await this.host.replaceNode(this.replaces ?? this.filter ?? this.source, this.target);
      // Whatever still writes through the filter goes back onto the source.
      if (this.filter !== null) await this.host.replaceNode(this.filter, this.source);
    } finally {
      if (this.filter !== null) unregisterFilter(this.host.jobs, this.filter);
      await this.filter?.unref();
      this.endDrains();
      mirrored.delete(this.source);
      inUse.delete(this.source);
      inUse.delete(this.target);
      await this.replaces?.unref();
      await this.target.unref();
      await this.source.unref();
    }
  }
}
