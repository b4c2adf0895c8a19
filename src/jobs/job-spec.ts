// What every kind of block job shares in its spec, and QEMU's default job id and node lookup:
// apart from start.ts, which imports each kind, so that the kinds can use these without a circle.
import { BlockError } from '../errors.js';
import type { BlockNode } from '../node/node.js';
import type { JobHost } from './host.js';
import type { JobErrorPolicy } from './job.js';

/** What every block job takes (QAPI's common members of block-stream, block-commit, blockdev-mirror, blockdev-backup). */
export interface CommonJobSpec {
  /** The job's id; default: the id of the drive whose root is the job's node (QEMU: the device name), else required. */
  jobId?: string;
  /** Bytes per second (0: unlimited). */
  speed?: number;
  /** Default true: finalize on its own; false: wait in PENDING for job.finalize(). */
  autoFinalize?: boolean;
  /** Default true: disappear once concluded; false: stay CONCLUDED until job.dismiss(). */
  autoDismiss?: boolean;
}

/** Error policies of a job that reads one node and writes another. */
export interface JobErrorPolicies {
  onSourceError?: JobErrorPolicy;
  onTargetError?: JobErrorPolicy;
}

/**
 * The job id QEMU picks: the one given, else the name of the drive on `node` (a node without
 * a named drive has none: the id is '', refused as "Invalid job ID ''", as QEMU refuses it).
 */
export function defaultJobId(host: JobHost, node: BlockNode, jobId: string | undefined): string {
  if (jobId !== undefined) return jobId;
  return host.drivesOn(node).find((d) => host.isListedDrive(d))?.id ?? '';
}

/** The node named `name` (a node name, or the id of a drive: its root), or QEMU's error for it. */
export function nodeByName(host: JobHost, name: string, field: string): BlockNode {
  const node = host.findNode(name) ?? host.driveRoot(name);
  if (node === undefined) throw new BlockError('ENOENT', `Cannot find device='${name}' nor node-name='${name}'`, { field });
  return node;
}

