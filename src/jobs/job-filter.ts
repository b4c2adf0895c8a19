// The filter node QEMU puts in the graph for a running job (commit_top for an intermediate
// commit, mirror_top for a mirror or an active commit, copy-on-read for a stream), as this layer
// shows it: a node of that driver over the node the job works on, named `filter-node-name` or
// `#blockNNN`, listed by query-named-block-nodes and holding its name (a blockdev-add or another
// job cannot take it) until the job ends. Users are not moved onto it: the jobs here see every
// write through the node's dirty bitmaps (mirror, active commit) and copy every allocated range
// anyway (stream), so a pass-through in the path would change nothing but cost a hop per request.
// The write-blocking mirror's filter (mirror-top.ts) is in the path and is registered here too.
import type { z } from 'zod';
import { BlockError } from '../errors.js';
import { isWellFormedId } from '../ids.js';
import { BlockNode } from '../node/node.js';
import type { BlockStatus, DriverInstance, GenericBlockDriver } from '../node/types.js';
import type { JobHost } from './host.js';
import type { Job, JobWork } from './job.js';
import type { JobRegistry } from './registry.js';

/** QEMU's drivers of job filters. */
export type JobFilterDriver = 'commit_top' | 'mirror_top' | 'copy-on-read';

/** Each layer's job filters (by its job registry), oldest first. */
const filtersByRegistry = new WeakMap<JobRegistry, BlockNode[]>();

/** QEMU's generated node names are `#block` and a number; ours count up from 1 per process. */
let generated = 0;

function filterDriver(name: JobFilterDriver): GenericBlockDriver<BlockNode> {
  return {
    name,
    capabilities: { kind: 'filter' },
    // Never read: the node is made by a job, not opened from options.
    schema: undefined as unknown as z.ZodType,
    open: () => Promise.reject(new BlockError('ENOTSUP', `${name} nodes are made by block jobs only`)),
  };
}

const DRIVERS: Readonly<Record<JobFilterDriver, GenericBlockDriver<BlockNode>>> = {
  commit_top: filterDriver('commit_top'),
  mirror_top: filterDriver('mirror_top'),
  'copy-on-read': filterDriver('copy-on-read'),
};

/** Passes everything to the filtered node; shows its cluster size and dirty flag (as QEMU's ImageInfo of a filter). */
class PassThrough implements DriverInstance {
  readonly alignment = 1;

  constructor(private readonly child: BlockNode) {}

  length(): number {
    return this.child.length;
  }

  read(offset: number, buffer: Uint8Array): Promise<void> {
    return this.child.read(offset, buffer);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.child.write(offset, data);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.child.writeZeroes(offset, length);
  }

  discard(offset: number, length: number): Promise<void> {
    return this.child.discard(offset, length);
  }

  flush(): Promise<void> {
    return this.child.flush();
  }

  blockStatus(offset: number, length: number): Promise<BlockStatus> {
    return this.child.blockStatus(offset, length);
  }

  info(): Record<string, unknown> {
    const { clusterSize, dirty } = this.child.info();
    const out: Record<string, unknown> = {};
    if (typeof clusterSize === 'number') out.clusterSize = clusterSize;
    if (typeof dirty === 'boolean') out.dirty = dirty;
    return out;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A node name for a filter: QEMU's `#blockNNN` when none is given. */
export function filterName(given: string | undefined): string {
  return given ?? `#block${String(++generated).padStart(3, '0')}`;
}

/** The running jobs' filter nodes of a layer, oldest first. */
export function jobFilterNodes(jobs: JobRegistry): readonly BlockNode[] {
  return filtersByRegistry.get(jobs) ?? [];
}

/**
 * Refuses a `filter-node-name` as QEMU does when it creates the filter: not a well-formed id, or
 * the name of a node (or of another job's filter). `prefix` is QEMU's (stream: "Could not create node: ").
 */
export function checkFilterName(host: JobHost, name: string | undefined, prefix = ''): void {
  if (name === undefined) return;
  if (!isWellFormedId(name)) throw new BlockError('EINVAL', `${prefix}Invalid node-name: '${name}'`, { field: 'filter-node-name' });
  if (host.findNode(name) !== undefined || jobFilterNodes(host.jobs).some((n) => n.name === name)) {
    throw new BlockError('EEXIST', `${prefix}Duplicate nodes with node-name='${name}'`, { field: 'filter-node-name' });
  }
}

/** Lists `node` among the layer's job filters until {@link unregisterFilter}. */
export function registerFilter(jobs: JobRegistry, node: BlockNode): void {
  const list = filtersByRegistry.get(jobs);
  if (list === undefined) filtersByRegistry.set(jobs, [node]);
  else list.push(node);
}

/** Removes `node` from the layer's job filters (once; later calls do nothing). */
export function unregisterFilter(jobs: JobRegistry, node: BlockNode): void {
  const list = filtersByRegistry.get(jobs);
  const at = list?.indexOf(node) ?? -1;
  if (at >= 0) list!.splice(at, 1);
}

/** A job's filter over `child`: listed and holding its name (and a reference on `child`) until the returned function drops it. */
export function addJobFilter(host: JobHost, driver: JobFilterDriver, name: string, child: BlockNode, readOnly: boolean): () => Promise<void> {
  child.ref();
  const node = new BlockNode(name, DRIVERS[driver], new PassThrough(child), new Map([['file', child]]), readOnly, { driver });
  registerFilter(host.jobs, node);
  let dropped = false;
  return async () => {
    if (dropped) return;
    dropped = true;
    unregisterFilter(host.jobs, node);
    await node.unref();
  };
}

/**
 * Drops the filter in the job's clean-up, after the work's own (QEMU removes it in the job's
 * prepare or abort): before the job concludes, so a node that only the filter still held is
 * closed, its file and lock let go, by the time the job's waiters wake.
 */
export function dropFilterOnClean(work: JobWork, drop: () => Promise<void>): void {
  const clean = work.clean;
  work.clean = async (job: Job) => {
    try {
      await clean?.call(work, job);
    } finally {
      await drop();
    }
  };
}
