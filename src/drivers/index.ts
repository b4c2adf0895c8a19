// The built-in drivers by name (the public exports), and the list every BlockLayer starts with.
export { builtinDrivers } from './builtin.js';
export { blkdebugDriver } from './blkdebug.js';
export { httpDriver } from './http/index.js';
export { memoryDriver } from './memory.js';
export { nullDriver } from './null.js';
export { qcow2Driver } from './qcow2/index.js';
export { rawDriver } from './raw.js';
export { vdiDriver } from './vdi/index.js';
export { vhdxDriver } from './vhdx/index.js';
export { vmdkDriver } from './vmdk/index.js';
export { vpcDriver } from './vpc/index.js';
