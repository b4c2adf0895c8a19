// block-commit (QEMU block/commit.c, and mirror.c's commit_active_start for the active layer):
// copies what `top` and the images between it and `base` hold into `base`. An intermediate
// commit then points the image above `top` at `base` (header and open graph); an active commit
// goes READY and, on job-complete, moves the users of `top` to `base`.
import { BlockError } from '../errors.js';
import type { BlockNode } from '../node/node.js';
import { ActiveCommitWork } from './commit-active.js';
import { CopyFlights, FLIGHT_PIECE } from './copy-flights.js';
import { COMMIT_WRITEBACK_EVERY, EarlyWriteback } from './commit-writeback.js';
import {
  allocatedBetween,
  bottomOf,
  CHAIN_CHUNK,
  chainBetween,
  chainDepth,
  checkSpeed,
  claimNodes,
  findBackingImage,
  imageFilename,
  nodeNamed,
  overlayOf,
  relink,
  writeCopied,
} from './commit-chain.js';
import type { JobHost } from './host.js';
import type { Job, JobErrorPolicy, JobWork } from './job.js';
import { type CommonJobSpec, defaultJobId } from './job-spec.js';
import { addJobFilter, checkFilterName, dropFilterOnClean, filterName } from './job-filter.js';
import { readWriteForJob } from './reopen-quiet.js';

/** layer.startJob({ type: 'commit', … }): QMP block-commit's arguments. */
export interface CommitJobSpec extends CommonJobSpec {
  type: 'commit';
  /** The chain's active layer: a node name, or a drive id (its root). */
  device: string;
  /** The image (by file name) committed from; default the active layer (an active commit). */
  top?: string;
  /** The node committed from. */
  topNode?: string;
  /** The image (by file name) committed into; default the bottom of the chain. */
  base?: string;
  /** The node committed into. */
  baseNode?: string;
  /** The backing file name written into the overlay of `top` (default: the base's file name); not for an active commit. */
  backingFile?: string;
  /** What a read or write error does (QEMU on-error; default report). */
  onError?: JobErrorPolicy;
  /** QEMU's commit filter's name: refused, no filter node is inserted here. */
  filterNodeName?: string;
}

/** The chain's active layer named by `device` (QEMU qmp_get_root_bs; DeviceNotFound on QMP). */
function rootNode(host: JobHost, device: string): BlockNode {
  const node = host.findNode(device) ?? host.driveRoot(device);
  if (node === undefined) throw new BlockError('ENOENT', `Device '${device}' not found`, { field: 'device' });
  return node;
}

/** `top` and `base` of a block-commit with QEMU's errors (qmp_block_commit). */
function commitEnds(host: JobHost, root: BlockNode, spec: CommitJobSpec): { top: BlockNode; base: BlockNode } {
  let top: BlockNode | undefined = root;
  if (spec.topNode !== undefined && spec.top !== undefined) throw new BlockError('EINVAL', "'top-node' and 'top' are mutually exclusive", { field: 'top' });
  if (spec.topNode !== undefined) {
    top = nodeNamed(host, spec.topNode, 'top-node');
    if (chainDepth(root, top) < 0) throw new BlockError('EINVAL', `'${spec.topNode}' is not in this backing file chain`, { field: 'top-node' });
  } else if (spec.top !== undefined && imageFilename(root) !== spec.top) {
    top = findBackingImage(root, spec.top);
  }
  if (top === undefined) throw new BlockError('EINVAL', `Top image file ${spec.top ?? 'NULL'} not found`, { field: 'top' });
  let base: BlockNode | undefined;
  if (spec.baseNode !== undefined && spec.base !== undefined) throw new BlockError('EINVAL', "'base-node' and 'base' are mutually exclusive", { field: 'base' });
  if (spec.baseNode !== undefined) {
    base = nodeNamed(host, spec.baseNode, 'base-node');
    if (chainDepth(top, base) < 0) throw new BlockError('EINVAL', `'${spec.baseNode}' is not in this backing file chain`, { field: 'base-node' });
  } else if (spec.base !== undefined) {
    base = findBackingImage(top, spec.base);
    if (base === undefined) throw new BlockError('EINVAL', `Can't find '${spec.base}' in the backing chain`, { field: 'base' });
  } else {
    base = bottomOf(top);
    // QEMU's text, spelling included.
    if (base === undefined) throw new BlockError('EINVAL', 'There is no backimg image', { field: 'base' });
  }
  if (top === base) throw new BlockError('EINVAL', 'cannot commit an image into itself', { field: 'base' });
  return { top, base };
}

/**
 * Starts a block-commit job: an active one when `top` is the active layer or has a writer (QEMU
 * qmp_block_commit). A read-only base is made read-write for the job and read-only again after
 * it (QEMU commit_start, commit_active_start; an active commit's base keeps the top's mode once
 * it took the top's place).
 */
export async function startCommit(host: JobHost, spec: CommitJobSpec): Promise<Job> {
  const root = rootNode(host, spec.device);
  const { top, base } = commitEnds(host, root, spec);
  const writer = host.drivesOn(top).some((d) => !d.readOnly);
  const active = top === root || writer;
  if (active && spec.backingFile !== undefined) {
    throw new BlockError('EINVAL', top === root ? "'backing-file' specified, but 'top' is the active layer" : "'backing-file' specified, but 'top' has a writer on it", {
      field: 'backing-file',
    });
  }
  checkSpeed(spec.speed);
  if (base.length < top.length) {
    throw new BlockError('ENOTSUP', `Node '${base.name}' (${base.length} bytes) is smaller than '${top.name}' (${top.length} bytes): resize it first`, { node: base.name, field: 'base' });
  }
  const overlay = active ? undefined : overlayOf(root, top);
  if (!active && overlay === undefined) throw new BlockError('EINVAL', `Could not find overlay image for ${imageFilename(top)}:`, { field: 'top' });
  const id = defaultJobId(host, root, spec.jobId);
  host.jobs.checkId(id);
  checkFilterName(host, spec.filterNodeName);
  const onError = spec.onError ?? 'report';
  const limit = chainDepth(top, base);
  const release = claimNodes([...chainBetween(top, base), base], 'commit');
  top.ref();
  base.ref();
  overlay?.ref();
  let held = true;
  // awaited: a node closed by the last unref lets go of its file (and its lock) before the job concludes
  const releaseAll = async () => {
    if (!held) return;
    held = false;
    release();
    await Promise.all([top.unref(), base.unref(), overlay?.unref()]);
  };
  let work: JobWork | undefined;
  let restoreBase = async () => {};
  let dropFilter: (() => Promise<void>) | undefined;
  try {
    const users = chainBetween(root, base);
    restoreBase = await readWriteForJob(host, users, base);
    // The id again: another job may have taken it while the base was being reopened.
    host.jobs.checkId(id);
    work = active
      ? new ActiveCommitWork(host, top, base, limit, onError, releaseAll, id, restoreBase)
      : new CommitWork(host, top, base, overlay!, limit, spec.backingFile, onError, releaseAll, restoreBase, users);
    // QEMU: mirror_top above the active layer, commit_top (read-only) above an intermediate top.
    dropFilter = addJobFilter(host, active ? 'mirror_top' : 'commit_top', filterName(spec.filterNodeName), top, active ? top.readOnly : true);
    dropFilterOnClean(work, dropFilter);
    return host.jobs.start(id, work, { speed: spec.speed, autoFinalize: spec.autoFinalize, autoDismiss: spec.autoDismiss });
  } catch (e) {
    await dropFilter?.();
    await restoreBase();
    if (work instanceof ActiveCommitWork) await work.dispose();
    else await releaseAll();
    throw e;
  }
}

/** Pieces read and written at once while the walk goes on (QEMU's commit has one; overlapping them is most of our speed). */
const PIECES_IN_FLIGHT = 4;
/** Widest allocation query of the overlapped walk: an extent's answer serves all of its pieces. */
const STATUS_WINDOW = CHAIN_CHUNK * 64;

/** The work of an intermediate commit (QEMU commit_run, commit_prepare). */
class CommitWork implements JobWork {
  readonly type = 'commit' as const;
  /** The sequential walk's buffer (the overlapped one has its pieces' own). */
  private buffer: Uint8Array | null = null;

  constructor(
    private readonly host: JobHost,
    private readonly top: BlockNode,
    private readonly base: BlockNode,
    private readonly overlay: BlockNode,
    /** Hops from top to base. */
    private readonly limit: number,
    private readonly backingFile: string | undefined,
    private readonly onError: JobErrorPolicy,
    private readonly release: () => Promise<void>,
    /** Makes the base read-only again if the job made it read-write. */
    private readonly restoreBase: () => Promise<void>,
    /** The chain above the base (whose drives a reopen drains). */
    private readonly users: readonly BlockNode[],
  ) {}

  async run(job: Job): Promise<void> {
    // Errors that only report end the job anyway: a piece's write may then run while the next piece is found and read.
    if (this.onError === 'report' || this.onError === 'auto') return this.runOverlapped(job);
    const { top, base } = this;
    const len = top.length;
    job.setRemaining(len);
    let ignored: unknown;
    for (let offset = 0; offset < len; ) {
      if (job.isCancelled) return;
      const { copy, length } = await allocatedBetween(top, offset, Math.min(CHAIN_CHUNK, len - offset), 0, this.limit);
      if (copy) {
        this.buffer ??= new Uint8Array(CHAIN_CHUNK);
        const part = this.buffer.subarray(0, length);
        let op: 'read' | 'write' = 'read';
        try {
          await top.read(offset, part);
          op = 'write';
          await writeCopied(base, offset, part);
        } catch (e) {
          // QEMU retries a piece under `ignore` for ever; here it is skipped and the job fails at its end, the chain unchanged.
          if ((await job.onIoError(this.onError, op, e)) === 'retry') continue;
          ignored ??= e;
        }
      }
      offset += length;
      job.addProgress(length);
      if (copy) await job.throttle(length);
      else await job.pausePoint();
    }
    if (ignored !== undefined) throw ignored;
  }

  /** The same walk with up to {@link PIECES_IN_FLIGHT} pieces read and written at once while the next pieces are looked up. */
  private async runOverlapped(job: Job): Promise<void> {
    const { top, base } = this;
    const len = top.length;
    job.setRemaining(len);
    // The base's files are flushed as the copy goes on: the flush before the relink then has little left.
    const writeback = await EarlyWriteback.of(base, COMMIT_WRITEBACK_EVERY);
    const flights = new CopyFlights(top, base, PIECES_IN_FLIGHT, FLIGHT_PIECE, (bytes) => writeback.wrote(bytes), async (_offset, _length, op, e) => {
      await job.onIoError(this.onError, op, e);
    });
    let failure: { reason: unknown } | undefined;
    try {
      // One allocation query per extent (up to STATUS_WINDOW), copied in pieces: fewer queries
      // than QEMU's one per chunk (each may reach the image file), the same bytes copied.
      let extentEnd = 0;
      let copy = false;
      for (let offset = 0; offset < len && !flights.failed && !writeback.failed; ) {
        if (job.isCancelled) break;
        if (offset >= extentEnd) {
          const found = await allocatedBetween(top, offset, Math.min(STATUS_WINDOW, len - offset), 0, this.limit);
          copy = found.copy;
          extentEnd = offset + found.length;
        }
        const length = copy ? Math.min(FLIGHT_PIECE, extentEnd - offset) : extentEnd - offset;
        if (copy) {
          await flights.slot();
          flights.start(offset, length);
        }
        offset += length;
        job.addProgress(length);
        if (copy) await job.throttle(length);
        else await job.pausePoint();
      }
    } catch (e) {
      failure = { reason: e };
    }
    // Every piece settles before the job goes on; the first failure is the job's.
    try {
      await flights.settleAll();
    } catch (e) {
      failure ??= { reason: e };
    }
    try {
      await writeback.settle();
    } catch (e) {
      failure ??= { reason: e };
    }
    if (failure !== undefined) throw failure.reason;
  }

  /**
   * The base holds everything: the overlay of top reads from it now (QEMU bdrv_drop_intermediate).
   * The overlay's flush, which the relink owes before it writes the header, goes beside the base's:
   * neither waits for the other, and the relink comes after both.
   */
  async prepare(): Promise<void> {
    await Promise.all([this.base.flush(), this.overlay.flush()]);
    await relink(this.host, this.overlay, this.base, this.backingFile ?? imageFilename(this.base), this.base.driver.name, this.users);
  }

  async clean(): Promise<void> {
    await this.restoreBase();
    await this.release();
  }
}
