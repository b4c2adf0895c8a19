import { BlockError } from '../errors.js';
import type { JobHost } from './host.js';
import type { Job } from './job.js';
import { type MirrorJobSpec, startMirror } from './mirror.js';

// The shared members and look-ups live in spec.ts (a kind's module imports them from there).
export { type CommonJobSpec, defaultJobId, type JobErrorPolicies, nodeByName } from './spec.js';

/** The jobs a layer can start, by `type`. Each kind's module adds its spec here. */
export type JobSpec = MirrorJobSpec;

/** Starts a job of any kind on the host (BlockLayer.startJob). */
export async function startJob(host: JobHost, spec: JobSpec): Promise<Job> {
  const type = (spec as { type?: unknown }).type;
  switch (type) {
    // Each kind adds its case.
    case 'mirror':
      return startMirror(host, spec as MirrorJobSpec);
    default:
      throw new BlockError('EINVAL', `type: unknown job type '${String(type)}'`, { field: 'type' });
  }
}
