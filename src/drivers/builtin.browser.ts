// The drivers every BlockLayer starts with, in the browser build (scripts/build-browser.ts swaps
// this in for builtin.ts). The bundle's entry exports every format's driver, so their code is in
// its first chunks anyway: a stub that imports it on first open would only add a request for a
// chunk of re-exports, and a module round trip, to every open (one after another down a qcow2 →
// opfs, http chain). The real drivers go in the registry; same names, order and behaviour as Node's.
import type { BlockDriver } from '../node/driver.js';
import { blkdebugDriver } from './blkdebug.js';
import { hostDrivers } from './host.js';
import { httpDriver } from './http/index.js';
import { memoryDriver } from './memory.js';
import { nullDriver } from './null.js';
import { qcow2Driver } from './qcow2/index.js';
import { rawDriver } from './raw.js';
import { vdiDriver } from './vdi/index.js';
import { vhdxDriver } from './vhdx/index.js';
import { vmdkDriver } from './vmdk/index.js';
import { vpcDriver } from './vpc/index.js';

/** The drivers every BlockLayer starts with: the portable ones, then the browser's (opfs). */
export function builtinDrivers(): BlockDriver[] {
  return [rawDriver, memoryDriver, nullDriver, blkdebugDriver, qcow2Driver, httpDriver, vpcDriver, vhdxDriver, vdiDriver, vmdkDriver, ...hostDrivers()] as BlockDriver[];
}
