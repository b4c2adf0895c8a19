// Drivers that need the host (files, sockets, librbd): registered in Node only. The browser
// build swaps in host.browser.ts.
import { fileDriver } from './file/index.js';
import { nbdDriver } from './nbd/index.js';
import { rbdDriver } from './rbd/adapter.js';
import type { BlockDriver } from '../node/driver.js';

export function hostDrivers(): BlockDriver[] {
  return [fileDriver, rbdDriver, nbdDriver] as BlockDriver[];
}
