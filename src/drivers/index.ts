import type { BlockDriver } from '../node/driver.js';
import { fileDriver } from './file/index.js';
import { memoryDriver } from './memory.js';
import { nullDriver } from './null.js';
import { rawDriver } from './raw.js';
import { rbdDriver } from './rbd/adapter.js';

/** The drivers every BlockLayer starts with. */
export function builtinDrivers(): BlockDriver[] {
  return [fileDriver, rawDriver, memoryDriver, nullDriver, rbdDriver] as BlockDriver[];
}

export { fileDriver, memoryDriver, nullDriver, rawDriver, rbdDriver };
