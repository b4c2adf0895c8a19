// The browser has no host drivers (file, rbd, nbd): the portable ones cover it.
import type { BlockDriver } from '../node/driver.js';

export function hostDrivers(): BlockDriver[] {
  return [];
}
