// Drivers that need the host (files, sockets, librbd): registered in Node only. The browser
// build swaps in host.browser.ts. nbd is a stub that imports its client on first open.
import { fileDriver } from './file/index.js';
import { nbdFacts } from './nbd/facts.js';
import { rbdDriver } from './rbd/adapter.js';
import type { BlockDriver } from '../node/driver.js';
import { lazyDriver } from '../node/lazy-driver.js';

const nbd = lazyDriver({ ...nbdFacts, load: async () => (await import('./nbd/index.js')).nbdDriver });

export function hostDrivers(): BlockDriver[] {
  return [fileDriver, rbdDriver, nbd] as BlockDriver[];
}
