import { BlockError } from '../errors.js';
import type { JobHost } from './host.js';
import type { Job } from './job.js';
import { type BackupJobSpec, startBackup } from './backup.js';
import { type CommitJobSpec, startCommit } from './commit.js';
import { type MirrorJobSpec, startMirror } from './mirror.js';
import { type StreamJobSpec, startStream } from './stream.js';

// The common members and helpers live in job-spec.ts, so that a kind's module need not import this one (no circle).
export { type CommonJobSpec, defaultJobId, type JobErrorPolicies, nodeByName } from './job-spec.js';

/** The jobs a layer can start, by `type`. Each kind's module adds its spec here. */
export type JobSpec = StreamJobSpec | CommitJobSpec | MirrorJobSpec | BackupJobSpec;

/** Starts a job of any kind on the host (BlockLayer.startJob). */
export async function startJob(host: JobHost, spec: JobSpec): Promise<Job> {
  const type = (spec as { type?: unknown }).type;
  switch (type) {
    case 'stream':
      return startStream(host, spec as StreamJobSpec);
    case 'commit':
      return startCommit(host, spec as CommitJobSpec);
    case 'mirror':
      return startMirror(host, spec as MirrorJobSpec);
    case 'backup':
      return startBackup(host, spec as BackupJobSpec);
    default:
      throw new BlockError('EINVAL', `type: unknown job type '${String(type)}'`, { field: 'type' });
  }
}
