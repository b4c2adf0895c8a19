export { type Clock, type ClockTimer, RealClock, VirtualClock } from './clock.js';
export {
  Drive,
  type DriveEvents,
  type DriveHost,
  type DriveLimits,
  type ErrorAction,
  type ErrorPolicy,
  type IoErrorEvent,
  type IoOperation,
  type IoStatus,
  type RequestOptions,
} from './drive.js';
export { type AddDirtyBitmapOptions, DirtyBitmaps } from './node/dirty-bitmaps.js';
export { type BitmapUse, DirtyBitmap, type DirtyBitmapInfo, type DirtyExtent } from './node/dirty-bitmap.js';
export { GranuleSet } from './node/granule-set.js';
export type { DirtyExtentsOptions } from './drive/dirty-extents.js';
export { createDriveReadStream, type DriveReadStreamOptions } from './drive/node-read-stream.js';
export { type DriveReadableStreamOptions, driveReadableStream } from './drive/web-stream.js';
export { fileDriver } from './drivers/file/index.js';
export { blkdebugDriver, memoryDriver, nullDriver, qcow2Driver, rawDriver, vdiDriver, vhdxDriver, vmdkDriver, vpcDriver } from './drivers/index.js';
export type { VdiNodeOptions, VhdxNodeOptions, VmdkNodeOptions } from './drivers/options.js';
export { nbdDriver } from './drivers/nbd/index.js';
export { rbdDriver } from './drivers/rbd/adapter.js';
export {
  isRbdImage,
  type RbdConnector,
  type RbdImage,
  type RbdImageStat,
  type RbdOpenRequest,
} from './drivers/rbd/adapter.js';
export { FakeRbdCluster, FakeRbdImage, type FakeRbdImageOptions, type FakeRbdStats } from './drivers/rbd/fake.js';
export { parseRbdFilename, type RbdFilenameOptions } from './drivers/rbd/filename.js';
export { BlockError, type BlockErrorCode, type BlockErrorContext, isBlockError } from './errors.js';
export {
  BlockLayer,
  type BlockLayerOptions,
  type BuiltinDriveOptions,
  type DriveOptions,
  type DriveOwnOptions,
  getDefaultLayer,
  openDrive,
  openImage,
} from './layer.js';
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
export type { FileNodeOptions, NbdNodeOptions, RbdNodeOptions } from './drivers/host-options.js';
export type {
  BlockDriver,
  BlockStatus,
  DriverCapabilities,
  DriverInstance,
  DriverKind,
  GenericBlockDriver,
  GenericOpenContext,
  NodeOptions,
  OpenContext,
  ParentLink,
} from './node/driver.js';
export { defineDriver } from './node/driver.js';
export { BlockNode } from './node/node.js';
export { DriverRegistry } from './node/registry.js';
export * from './options/index.js';
export type { DriveStats } from './stats.js';
export { ThrottleGroup, ThrottleGroupRegistry } from './throttle/group.js';
export { ThrottledRequestQueue, type ThrottleQueueStats } from './throttle/queue.js';
export {
  BUCKET_NAMES,
  type BucketName,
  type ThrottleConfig,
  type ThrottleLimits,
  type ThrottleOptions,
  throttleLimitsSchema,
  throttleOptionsSchema,
  validateLimits,
} from './throttle/limits.js';
export * as bucket from './throttle/bucket.js';
export { throttleFilterDriver } from './drivers/throttle.js';
export { type BenchJob, type BenchJobInput, jobSchema as benchJobSchema } from './bench/job.js';
export { LatencyHistogram, type LatencySummary } from './bench/histogram.js';
export { plotSvg } from './bench/plot.js';
export { type BenchResult, benchResultSchema } from './bench/report.js';
export { runJob } from './bench/runner.js';
export { formatTable } from './bench/table.js';
export { probeFormat } from './drivers/qcow2/index.js';
export { type CommitOptions, type CommitResult, commitImage } from './tools/commit.js';
export type { Qcow2Snapshot } from './drivers/qcow2/snapshots.js';
export * from './qmp/index.js';
export { type NbdAddress, type NbdClientInfo, type NbdExport, type NbdListenOptions, NbdServer, type NbdServerEvents, type NbdServerOptions } from './nbd/server.js';
export {
  loadClientPskFile,
  loadPskFile,
  loadQemuTlsClientCredsDir,
  loadQemuTlsCredsDir,
  type NbdClientTls,
  type NbdClientTlsPsk,
  type NbdClientTlsX509,
  type NbdTlsOptions,
  type NbdTlsPsk,
  type NbdTlsX509,
  parsePskFile,
} from './drivers/nbd/tls.js';
export { type CheckImageOptions, checkImage } from './tools/check.js';
export type { CheckOptions, CheckResult, RepairMode } from './node/check-result.js';
export { checkQcow2, type Qcow2CheckOptions, repairRefcounts } from './drivers/qcow2/check.js';
export type { CheckedFile, Qcow2File } from './drivers/qcow2/check.js';
export { type CreatedImage, type CreateFileOptions, type CreateOptionsInput, createImage, createOptionsSchema, createQcow2OnNode, type FormatCreateOptionsInput, PREALLOCATION_MODES, type Preallocation } from './tools/create.js';
/** qemu-img convert as a call: an image's guest view as a new sparse raw or (compressed) qcow2 file, written atomically. */
export { type ConvertCreateOptions, type ConvertImageOptions, type ConvertResult, convertImage } from './tools/convert.js';
/** qemu-img info --output=json as a call: format, sizes, backing file, snapshots, format-specific data. */
export { type ImageInfo, type ImageInfoOptions, type ImageSnapshotInfo, imageInfo, type Qcow2FormatSpecific } from './tools/info.js';
/** qemu-img map --output=json as a call: the allocation map of an image's guest view. */
export { type ImageMapEntry, type ImageMapOptions, imageMap } from './tools/map.js';
/** qemu-img bitmap as a call: add, remove, clear, enable, disable or merge a persistent dirty bitmap of an image. */
export { type BitmapImageOptions, type BitmapOperation, bitmapImage } from './tools/bitmap.js';
/** How the image tools open their input (format, snapshot, force-share, layer, signal). */
export type { InputOptions as ImageInputOptions } from './tools/open-input.js';
/** qemu-img resize as a call: grows or shrinks an image's virtual size (`+1G`, `-512M`, `10G`). */
export { PREALLOC_MODES, preallocMode, type ResizeOptions, type ResizeResult, resizeImage, resizeTarget } from './tools/resize.js';
export type { PreallocMode, TruncateOptions } from './node/types.js';
export { type SnapshotAction, type SnapshotImageOptions, type SnapshotResult, snapshotImage } from './tools/snapshot.js';
export type { InternalSnapshotInfo, InternalSnapshots, NewSnapshot } from './node/types.js';
export { type CompareOptions, type CompareReason, type CompareResult, type CompareStage, CompareError, compareImages } from './tools/compare.js';
export { type RebaseOptions, type RebaseResult, rebaseImage } from './tools/rebase.js';
/** Block jobs: layer.startJob({ type: 'stream' | 'commit', … }) (QMP block-stream, block-commit). */
export type { StreamJobSpec } from './jobs/stream.js';
export type { CommitJobSpec } from './jobs/commit.js';
export { type MirrorJobSpec, startMirror } from './jobs/mirror.js';
/** The backup job (layer.startJob({ type: 'backup', … }); QMP blockdev-backup). */
export type { BackupJobSpec, BackupPerf, BackupSync, BitmapSyncMode } from './jobs/backup.js';
