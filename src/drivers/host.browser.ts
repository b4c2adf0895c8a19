// The browser has no host drivers (file, rbd, nbd): the portable ones cover it, and its own
// storage, the Origin Private File System. The opfs driver is in the bundle's first chunks: a
// page or worker that opens a disk kept in OPFS fetches it with the rest at start-up instead of
// one more chunk, requested only when the first open needs it.
import type { BlockDriver } from '../node/driver.js';
import { opfsDriver } from './opfs/index.js';

export function hostDrivers(): BlockDriver[] {
  return [opfsDriver] as BlockDriver[];
}
