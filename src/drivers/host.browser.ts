// The browser has no host drivers (file, rbd, nbd): the portable ones cover it, and its own
// storage, the Origin Private File System (opfs, loaded on first open).
import type { BlockDriver } from '../node/driver.js';
import { lazyDriver } from '../node/lazy-driver.js';
import { opfsFacts } from './opfs/facts.js';

const opfs = lazyDriver({ ...opfsFacts, load: async () => (await import('./opfs/index.js')).opfsDriver });

export function hostDrivers(): BlockDriver[] {
  return [opfs] as BlockDriver[];
}
