import { BlockError } from '../errors.js';
import { type BackupJobSpec, startBackup } from './backup.js';
import type { JobHost } from './host.js';
import type { Job } from './job.js';

export { type CommonJobSpec, defaultJobId, type JobErrorPolicies, nodeByName } from './job-spec.js';

/** The jobs a layer can start, by `type`. Each kind's module adds its spec here. */
export type JobSpec = BackupJobSpec;

/** Starts a job of any kind on the host (BlockLayer.startJob). */
export async function startJob(host: JobHost, spec: JobSpec): Promise<Job> {
  const type = (spec as { type?: unknown }).type;
  switch (type) {
    // Each kind adds its case: `case 'mirror': return startMirror(host, spec);`
    case 'backup':
      return startBackup(host, spec as BackupJobSpec);
    default:
      throw new BlockError('EINVAL', `type: unknown job type '${String(type)}'`, { field: 'type' });
  }
}
