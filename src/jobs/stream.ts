// block-stream (QEMU block/stream.c): copies into the top image every range allocated below it
// down to `base`, then makes `base` (or nothing) its backing file, in the header and in the
// open graph; the images in between are released.
import { BlockError } from '../errors.js';
import type { BlockNode } from '../node/node.js';
import { allocatedBetween, backingOf, CHAIN_CHUNK, chainBetween, chainDepth, checkSpeed, claimNodes, findBackingImage, imageFilename, nodeNamed, relink, writeCopied } from './commit-chain.js';
import type { JobHost } from './host.js';
import { CopyGuard } from './stream-guard.js';
import type { Job, JobErrorPolicy, JobWork } from './job.js';
import { type CommonJobSpec, defaultJobId, nodeByName } from './job-spec.js';
import { addJobFilter, checkFilterName, dropFilterOnClean, filterName } from './job-filter.js';
import { readWriteForJob } from './reopen-quiet.js';

/** layer.startJob({ type: 'stream', … }): QMP block-stream's arguments. */
export interface StreamJobSpec extends CommonJobSpec {
  type: 'stream';
  /** The image to fill: a node name, or a drive id (its root). */
  device: string;
  /** The image (by file name) that stays the backing file; absent with `baseNode` and `bottom`: the whole chain is streamed. */
  base?: string;
  /** The node that stays the backing node. */
  baseNode?: string;
  /** The lowest node streamed (its backing node becomes the base). */
  bottom?: string;
  /** The backing file name written into the header (default: the base's file name). */
  backingFile?: string;
  /** What a read or write error does (QEMU on-error; default report). */
  onError?: JobErrorPolicy;
  /** QEMU's copy-on-read filter's name: refused, no filter node is inserted here. */
  filterNodeName?: string;
}

/** The base of a block-stream: `base`, `base-node` or `bottom`'s backing, with QEMU's errors (qmp_block_stream). */
function streamBase(host: JobHost, top: BlockNode, spec: StreamJobSpec): BlockNode | undefined {
  if (spec.base !== undefined && spec.baseNode !== undefined) throw new BlockError('EINVAL', "'base' and 'base-node' cannot be specified at the same time", { field: 'base' });
  if (spec.base !== undefined && spec.bottom !== undefined) throw new BlockError('EINVAL', "'base' and 'bottom' cannot be specified at the same time", { field: 'base' });
  if (spec.bottom !== undefined && spec.baseNode !== undefined) throw new BlockError('EINVAL', "'bottom' and 'base-node' cannot be specified at the same time", { field: 'bottom' });
  if (spec.base !== undefined) {
    const base = findBackingImage(top, spec.base);
    if (base === undefined) throw new BlockError('EINVAL', `Can't find '${spec.base}' in the backing chain`, { field: 'base' });
    return base;
  }
  if (spec.baseNode !== undefined) {
    const base = nodeNamed(host, spec.baseNode, 'base-node');
    if (base === top || chainDepth(top, base) < 0) throw new BlockError('EINVAL', `Node '${spec.baseNode}' is not a backing image of '${spec.device}'`, { field: 'base-node' });
    return base;
  }
  if (spec.bottom !== undefined) {
    const bottom = nodeNamed(host, spec.bottom, 'bottom');
    if (chainDepth(top, bottom) < 0) throw new BlockError('EINVAL', `Node '${spec.bottom}' is not in a chain starting from '${spec.device}'`, { field: 'bottom' });
    return backingOf(bottom);
  }
  return undefined;
}

/**
 * Starts a block-stream job (QEMU qmp_block_stream + stream_start): a read-only top is made
 * read-write for the job and read-only again after it.
 */
export async function startStream(host: JobHost, spec: StreamJobSpec): Promise<Job> {
  const top = nodeByName(host, spec.device, 'device');
  const base = streamBase(host, top, spec);
  if (base === undefined && spec.backingFile !== undefined) throw new BlockError('EINVAL', 'backing file specified, but streaming the entire chain', { field: 'backing-file' });
  checkSpeed(spec.speed);
  const id = defaultJobId(host, top, spec.jobId);
  host.jobs.checkId(id);
  checkFilterName(host, spec.filterNodeName, 'Could not create node: ');
  const release = claimNodes(chainBetween(top, base), 'stream');
  top.ref();
  base?.ref();
  let held = true;
  // awaited: a node closed by the last unref lets go of its file (and its lock) before the job concludes
  const releaseNodes = async () => {
    if (!held) return;
    held = false;
    release();
    await Promise.all([top.unref(), base?.unref()]);
  };
  let work: StreamWork | undefined;
  let restoreTop = async () => {};
  let dropFilter: (() => Promise<void>) | undefined;
  try {
    restoreTop = await readWriteForJob(host, [], top);
    // The id again: another job may have taken it while the top was being reopened.
    host.jobs.checkId(id);
    work = new StreamWork(host, top, base, spec.backingFile, spec.onError ?? 'report', releaseNodes, id, restoreTop);
    dropFilter = addJobFilter(host, 'copy-on-read', filterName(spec.filterNodeName), top, top.readOnly);
    dropFilterOnClean(work, dropFilter);
    return host.jobs.start(id, work, { speed: spec.speed, autoFinalize: spec.autoFinalize, autoDismiss: spec.autoDismiss });
  } catch (e) {
    await dropFilter?.();
    await restoreTop();
    if (work) await work.release();
    else await releaseNodes();
    throw e;
  }
}

/** The work of one stream job. */
class StreamWork implements JobWork {
  readonly type = 'stream' as const;
  private readonly buffer = new Uint8Array(CHAIN_CHUNK);
  private readonly guard: CopyGuard;

  constructor(
    private readonly host: JobHost,
    private readonly top: BlockNode,
    private readonly base: BlockNode | undefined,
    private readonly backingFile: string | undefined,
    private readonly onError: JobErrorPolicy,
    private readonly releaseNodes: () => Promise<void>,
    jobId: string,
    /** Makes the top read-only again if the job made it read-write (QEMU stream_clean). */
    private readonly restoreTop: () => Promise<void>,
  ) {
    this.guard = new CopyGuard(top, `#stream-${jobId}`);
  }

  /** Lets go of the nodes, the write hook and the bitmap. */
  release(): Promise<void> {
    this.guard.dispose();
    return this.releaseNodes();
  }

  async run(job: Job): Promise<void> {
    const { top, base } = this;
    // Nothing between top and base: nothing to stream (QEMU returns at once, progress 0 of 0).
    if (backingOf(top) === base) return;
    const len = top.length;
    const limit = base === undefined ? Infinity : chainDepth(top, base);
    job.setRemaining(len);
    let ignored: unknown;
    for (let offset = 0; offset < len; ) {
      if (job.isCancelled) return;
      const { copy, length } = await allocatedBetween(top, offset, Math.min(CHAIN_CHUNK, len - offset), 1, limit);
      if (copy) {
        const part = this.buffer.subarray(0, length);
        const guard = this.guard;
        let op: 'read' | 'write' = 'read';
        try {
          await guard.begin(offset, length);
          await top.read(offset, part);
          // A guest write landed meanwhile: read the piece again.
          if (guard.changed) continue;
          op = 'write';
          await guard.writeOwn(() => writeCopied(top, offset, part));
        } catch (e) {
          guard.endPiece();
          // stop: retried once resumed; ignore: the job goes on but fails at its end, leaving the chain as it was.
          if ((await job.onIoError(this.onError, op, e)) === 'retry') continue;
          ignored ??= e;
        } finally {
          guard.endPiece();
        }
      }
      offset += length;
      job.addProgress(length);
      if (copy) await job.throttle(length);
      else await job.pausePoint();
    }
    if (ignored !== undefined) throw ignored;
  }

  /** The top image now holds everything above the base: point it at the base (QEMU stream_prepare). */
  async prepare(): Promise<void> {
    const { top, base } = this;
    if (backingOf(top) === undefined) return;
    // QEMU rewrites the header even when nothing was streamed.
    await relink(this.host, top, base ?? null, base === undefined ? null : (this.backingFile ?? imageFilename(base)), base?.driver.name);
  }

  async clean(): Promise<void> {
    await this.restoreTop();
    await this.release();
  }
}
