/**
 * The browser build's entry (dist/browser/blocklayer.js, the `browser` export condition): the
 * portable core — drives, throttling and throttle groups, the node graph, qcow2, raw, memory,
 * null, blkdebug and throttle drivers — without the host drivers (file, rbd, nbd), the NBD
 * server, QMP or the CLI. Built by scripts/build-browser.ts, which swaps each src/platform module
 * for its .browser.ts twin.
 */
export { type Clock, type ClockTimer, RealClock, VirtualClock } from './clock.js';
export {
  Drive,
  type DriveEvents,
  type IoOperation,
  type IoStatus,
  type RequestOptions,
} from './drive.js';
export { type DriveReadableStreamOptions, driveReadableStream } from './drive/web-stream.js';
export { blkdebugDriver, memoryDriver, nullDriver, qcow2Driver, rawDriver, vdiDriver, vhdxDriver, vmdkDriver, vpcDriver } from './drivers/index.js';
export type { VdiNodeOptions, VhdxNodeOptions, VmdkNodeOptions } from './drivers/options.js';
export { throttleFilterDriver } from './drivers/throttle.js';
export { BlockError, type BlockErrorCode, type BlockErrorContext, isBlockError } from './errors.js';
export { type AddDirtyBitmapOptions, DirtyBitmaps } from './node/dirty-bitmaps.js';
export { type BitmapUse, DirtyBitmap, type DirtyBitmapInfo, type DirtyExtent } from './node/dirty-bitmap.js';
export { GranuleSet } from './node/granule-set.js';
export type { DirtyExtentsOptions } from './drive/dirty-extents.js';
export { BlockLayer, type BlockLayerOptions, type BuiltinDriveOptions, type DriveOptions, type DriveOwnOptions, getDefaultLayer, openDrive, openImage } from './layer.js';
export type {
  BlkdebugNodeOptions,
  BuiltinDriverName,
  BuiltinDriverOptions,
  BuiltinNodeOptions,
  ChildNodeOptions,
  CommonNodeOptions,
  DriverNodeOptions,
  HttpNodeOptions,
  KeyCheckedOptions,
  MemoryNodeOptions,
  NullNodeOptions,
  ProbedNodeOptions,
  Qcow2NodeOptions,
  VpcNodeOptions,
  RawNodeOptions,
  ThrottleNodeOptions,
} from './drivers/options.js';
export type { BlockDriver, BlockStatus, DriverInstance, GenericBlockDriver, GenericOpenContext, NodeOptions, OpenContext, ParentLink } from './node/driver.js';
export { defineDriver } from './node/driver.js';
export { BlockNode } from './node/node.js';
export * from './options/index.js';
export type { DriveStats } from './stats.js';
export type { OpfsNodeOptions } from './drivers/opfs/facts.js';
export { layQcow2Image, type NodeQcow2Options } from './tools/create-on-node.js';
export { ThrottleGroup, ThrottleGroupRegistry } from './throttle/group.js';
export type { ThrottleLimits, ThrottleOptions } from './throttle/limits.js';
export { connectWorkerLayer, serveWorkerLayer, WorkerDrive, type WorkerEndpoint, WorkerLayer, type WorkerLayerHost } from './worker/index.js';
export { checkImage, type CheckImageOptions } from './tools/check.js';
export type { CheckResult, RepairMode } from './node/check-result.js';
