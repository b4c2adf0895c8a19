// The drivers every BlockLayer starts with. The formats and the remote protocols are stubs that
// import their code on first open, create or check (node/lazy-driver.ts): a program, or a CLI verb,
// loads only the drivers it uses. The order is the registry's, and probing's on a tie.
import type { BlockDriver } from '../node/driver.js';
import { lazyDriver } from '../node/lazy-driver.js';
import { blkdebugFacts } from './blkdebug-facts.js';
import { hostDrivers } from './host.js';
import { httpFacts } from './http/facts.js';
import { memoryDriver } from './memory.js';
import { nullDriver } from './null.js';
import { qcow2Facts } from './qcow2/facts.js';
import { rawDriver } from './raw.js';
import { vdiFacts } from './vdi/facts.js';
import { vhdxFacts } from './vhdx/facts.js';
import { vmdkFacts } from './vmdk/facts.js';
import { vpcFacts } from './vpc/facts.js';

const blkdebug = lazyDriver({ ...blkdebugFacts, load: async () => (await import('./blkdebug.js')).blkdebugDriver });
const qcow2 = lazyDriver({ ...qcow2Facts, load: async () => (await import('./qcow2/index.js')).qcow2Driver });
const http = lazyDriver({ ...httpFacts, load: async () => (await import('./http/index.js')).httpDriver });
const vpc = lazyDriver({ ...vpcFacts, load: async () => (await import('./vpc/index.js')).vpcDriver });
const vhdx = lazyDriver({ ...vhdxFacts, load: async () => (await import('./vhdx/index.js')).vhdxDriver });
const vdi = lazyDriver({ ...vdiFacts, load: async () => (await import('./vdi/index.js')).vdiDriver });
const vmdk = lazyDriver({ ...vmdkFacts, load: async () => (await import('./vmdk/index.js')).vmdkDriver });

/** The drivers every BlockLayer starts with: the portable ones, then the host's (file, rbd, nbd in Node). */
export function builtinDrivers(): BlockDriver[] {
  return [rawDriver, memoryDriver, nullDriver, blkdebug, qcow2, http, vpc, vhdx, vdi, vmdk, ...hostDrivers()] as BlockDriver[];
}
