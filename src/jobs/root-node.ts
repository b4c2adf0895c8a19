// QEMU's root nodes (bdrv_is_root_node, qmp_get_root_bs): a node whose only parents are
// BlockBackends (here: drives). A node below another node, below a job's filter, or used by a
// running job (its source, target, chain: QEMU attaches those to the job as children) is not one,
// and commands that need a root (mirror, commit, internal snapshots) refuse it.
import { BlockError } from '../errors.js';
import type { BlockNode } from '../node/node.js';
import { jobFilterNodes } from './job-filter.js';
import { isMirrorNode } from './mirror.js';
import type { JobRegistry } from './registry.js';

/** Nodes a running job holds (QEMU block_job_add_bdrv), with how many jobs hold each. */
const heldByJobs = new WeakMap<BlockNode, number>();

/** Marks `nodes` as used by a running job until the returned function is called (once; later calls do nothing). */
export function holdForJob(nodes: readonly BlockNode[]): () => void {
  for (const n of nodes) heldByJobs.set(n, (heldByJobs.get(n) ?? 0) + 1);
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    for (const n of nodes) {
      const count = (heldByJobs.get(n) ?? 1) - 1;
      if (count > 0) heldByJobs.set(n, count);
      else heldByJobs.delete(n);
    }
  };
}

/** What the check needs of the layer: every node of its graphs, and its jobs (for their filters). */
export interface NodeGraph {
  readonly jobs: JobRegistry;
  listNodes(): BlockNode[];
}

/** Whether `node` is a root node (QEMU bdrv_is_root_node): no node, job filter or running job above it. */
export function isRootNode(graph: NodeGraph, node: BlockNode): boolean {
  if (heldByJobs.has(node) || isMirrorNode(node)) return false;
  for (const parents of [graph.listNodes(), jobFilterNodes(graph.jobs)]) {
    for (const p of parents) for (const child of p.children.values()) if (child === node) return false;
  }
  return true;
}

/** Refuses a node that is not a root with QEMU's "Need a root block node" (EBUSY, `field`). */
export function checkRootNode(graph: NodeGraph, node: BlockNode, field = 'device'): void {
  if (!isRootNode(graph, node)) throw new BlockError('EBUSY', 'Need a root block node', { field, node: node.name });
}
