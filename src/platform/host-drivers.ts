// Drivers that need the host (files, sockets, librbd): registered in Node only. The browser
// build swaps in host-drivers.browser.ts.
import { fileDriver } from '../drivers/file/index.js';
import { nbdDriver } from '../drivers/nbd/index.js';
import { rbdDriver } from '../drivers/rbd/adapter.js';
import type { BlockDriver } from '../node/driver.js';

export function hostDrivers(): BlockDriver[] {
  return [fileDriver, rbdDriver, nbdDriver] as BlockDriver[];
}
