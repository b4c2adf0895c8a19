import type { BlockDriver } from '../node/driver.js';
import { hostDrivers } from './host.js';
import { blkdebugDriver } from './blkdebug.js';
import { httpDriver } from './http/index.js';
import { memoryDriver } from './memory.js';
import { nullDriver } from './null.js';
import { qcow2Driver } from './qcow2/index.js';
import { rawDriver } from './raw.js';
import { vdiDriver } from './vdi/index.js';
import { vhdxDriver } from './vhdx/index.js';
import { vmdkDriver } from './vmdk/index.js';
import { vpcDriver } from './vpc/index.js';

/** The drivers every BlockLayer starts with: the portable ones, then the host's (file, rbd, nbd in Node). */
export function builtinDrivers(): BlockDriver[] {
  return [rawDriver, memoryDriver, nullDriver, blkdebugDriver, qcow2Driver, httpDriver, vpcDriver, vhdxDriver, vdiDriver, vmdkDriver, ...hostDrivers()] as BlockDriver[];
}

export { blkdebugDriver, httpDriver, memoryDriver, nullDriver, qcow2Driver, rawDriver, vdiDriver, vhdxDriver, vmdkDriver, vpcDriver };
