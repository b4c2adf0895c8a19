/**
 * QMP blockdev-backup (QEMU blockdev.c: a one-action transaction) and the `blockdev-backup`
 * transaction action: QAPI BlockdevBackup read member by member in QAPI's order with its errors,
 * checked by the backup job's own checks (QEMU's order and texts), made on prepare and started
 * on commit, so a backup in a transaction with block-dirty-bitmap-add begins at the same point.
 */
import type { BackupJobSpec, BackupPerf, BackupSync, BitmapSyncMode } from '../jobs/backup.js';
import { prepareBackup } from '../jobs/backup.js';
import type { Job, JobErrorPolicy } from '../jobs/job.js';
import type { BlockLayer } from '../layer.js';
import type { PreparedAction } from './bitmap-commands.js';
import { type Args, dict, generic, only, optBool, optInt, optSpeed, str } from './qapi-args.js';

const SYNC_MODES: readonly BackupSync[] = ['top', 'full', 'none', 'incremental', 'bitmap'];
const BITMAP_MODES: readonly BitmapSyncMode[] = ['on-success', 'never', 'always'];
const ON_ERROR: readonly JobErrorPolicy[] = ['report', 'ignore', 'enospc', 'stop', 'auto'];

function optEnum<T extends string>(args: Args, key: string, values: readonly T[], required: boolean, path: string): T | undefined {
  const v = required ? str(args, key, true, path) : str(args, key, false, path);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw generic(`Parameter '${path}${key}' does not accept value '${v}'`);
  return v as T;
}

function parsePerf(value: unknown, path: string): BackupPerf {
  const args = dict(value, `${path}x-perf`);
  const at = `${path}x-perf.`;
  const perf: BackupPerf = {};
  const useCopyRange = optBool(args, 'use-copy-range', at);
  const maxWorkers = optInt(args, 'max-workers', at);
  const maxChunk = optInt(args, 'max-chunk', at);
  only(args, ['use-copy-range', 'max-workers', 'max-chunk'], at);
  if (useCopyRange !== undefined) perf.useCopyRange = useCopyRange;
  if (maxWorkers !== undefined) perf.maxWorkers = maxWorkers;
  if (maxChunk !== undefined) perf.maxChunk = maxChunk;
  return perf;
}

/** Reads QAPI BlockdevBackup (BackupCommon's members, then `target`). */
export function parseBlockdevBackup(args: Args, path = ''): BackupJobSpec {
  return parseBackupCommon(args, path, []);
}

/**
 * BackupCommon's members, then `target` (a node name, or drive-backup's file name), then the
 * caller's own `extra` members, read by `readExtra` (QAPI's order: unknown members are refused last).
 */
export function parseBackupCommon(args: Args, path: string, extra: readonly string[], readExtra?: () => void): BackupJobSpec {
  const jobId = str(args, 'job-id', false, path);
  const device = str(args, 'device', true, path);
  const sync = optEnum(args, 'sync', SYNC_MODES, true, path)!;
  const speed = optSpeed(args, 'speed', path);
  const bitmap = str(args, 'bitmap', false, path);
  const bitmapMode = optEnum(args, 'bitmap-mode', BITMAP_MODES, false, path);
  const compress = optBool(args, 'compress', path);
  const onSourceError = optEnum(args, 'on-source-error', ON_ERROR, false, path);
  const onTargetError = optEnum(args, 'on-target-error', ON_ERROR, false, path);
  const autoFinalize = optBool(args, 'auto-finalize', path);
  const autoDismiss = optBool(args, 'auto-dismiss', path);
  const filterNodeName = str(args, 'filter-node-name', false, path);
  const perf = args['x-perf'] === undefined ? undefined : parsePerf(args['x-perf'], path);
  const target = str(args, 'target', true, path);
  readExtra?.();
  only(
    args,
    ['job-id', 'device', 'sync', 'speed', 'bitmap', 'bitmap-mode', 'compress', 'on-source-error', 'on-target-error', 'auto-finalize', 'auto-dismiss', 'filter-node-name', 'x-perf', 'target', ...extra],
    path,
  );
  const spec: BackupJobSpec = { type: 'backup', device, target, sync };
  if (jobId !== undefined) spec.jobId = jobId;
  if (speed !== undefined) spec.speed = speed;
  if (bitmap !== undefined) spec.bitmap = bitmap;
  if (bitmapMode !== undefined) spec.bitmapMode = bitmapMode;
  if (compress !== undefined) spec.compress = compress;
  if (onSourceError !== undefined) spec.onSourceError = onSourceError;
  if (onTargetError !== undefined) spec.onTargetError = onTargetError;
  if (autoFinalize !== undefined) spec.autoFinalize = autoFinalize;
  if (autoDismiss !== undefined) spec.autoDismiss = autoDismiss;
  if (filterNodeName !== undefined) spec.filterNodeName = filterNodeName;
  if (perf !== undefined) spec.perf = perf;
  return spec;
}

/**
 * QEMU creates the job inside the transaction's drained section, which pauses it: the job
 * reports running, paused, running before any work. The same pause here (released when the
 * job first stops at its pause point) gives the same JOB_STATUS_CHANGE sequence.
 */
function startAsInDrainedSection(job: Job): void {
  job.pause();
  const resume = (status: string) => {
    if (status !== 'paused') return;
    job.off('status-change', resume);
    job.resume();
  };
  job.on('status-change', resume);
}

/**
 * The blockdev-backup action: prepare makes the job (CREATED, copy-before-write in place: the
 * point in time, as QEMU's), commit starts it, abort cancels it (QEMU reports it aborting,
 * concluded, null).
 */
export function prepareBlockdevBackup(layer: BlockLayer, spec: BackupJobSpec): PreparedAction {
  const job = prepareBackup(layer, spec).create();
  return {
    commit: () => {
      job.start();
      startAsInDrainedSection(job);
    },
    abort: () => {
      job.cancel();
      return job.whenConcluded();
    },
  };
}

/** QMP blockdev-backup. */
export function blockdevBackup(layer: BlockLayer, args: Args): Record<string, never> {
  prepareBlockdevBackup(layer, parseBlockdevBackup(args)).commit();
  return {};
}
