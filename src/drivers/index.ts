import type { BlockDriver } from '../node/driver.js';
import { blkdebugDriver } from './blkdebug.js';
import { fileDriver } from './file/index.js';
import { httpDriver } from './http/index.js';
import { memoryDriver } from './memory.js';
import { nbdDriver } from './nbd.js';
import { nullDriver } from './null.js';
import { qcow2Driver } from './qcow2/index.js';
import { rawDriver } from './raw.js';
import { rbdDriver } from './rbd/adapter.js';

/** The drivers every BlockLayer starts with. */
export function builtinDrivers(): BlockDriver[] {
  return [fileDriver, rawDriver, memoryDriver, nullDriver, blkdebugDriver, rbdDriver, qcow2Driver, nbdDriver, httpDriver] as BlockDriver[];
}

export { blkdebugDriver, fileDriver, httpDriver, memoryDriver, nbdDriver, nullDriver, qcow2Driver, rawDriver, rbdDriver };
