/**
 * QMP's mirror commands (qapi/block-core.json): blockdev-mirror onto an existing node, and
 * drive-mirror, which first creates (or opens, mode 'existing') the target image file. The
 * arguments are read as QEMU's QAPI visitor reads them, in its member order and with its errors;
 * the job's own checks (granularity, buf-size, sizes, job id) are the mirror job's.
 */
import { imageOptions } from '../image-options.js';
import type { BlockLayer } from '../layer.js';
import type { MirrorJobSpec } from '../jobs/mirror.js';
import type { NodeOptions } from '../node/driver.js';
import type { BlockNode } from '../node/node.js';
import { imageFilename } from '../jobs/commit-chain.js';
import { createImage } from '../tools/create.js';
import { type Args, generic, only, optBool, optInt, optSpeed, optUint32, str } from './qapi-args.js';

const SYNC_MODES = ['top', 'full', 'none', 'incremental', 'bitmap'] as const;
const ERROR_POLICIES = ['report', 'ignore', 'enospc', 'stop', 'auto'] as const;
const COPY_MODES = ['background', 'write-blocking'] as const;
const NEW_IMAGE_MODES = ['existing', 'absolute-paths'] as const;

/** An enum member (QAPI: "Parameter 'x' does not accept value 'y'"). */
function enumArg<T extends string>(args: Args, key: string, values: readonly T[], required: boolean): T | undefined {
  const v = required ? str(args, key, true) : str(args, key, false);
  if (v === undefined) return undefined;
  if (!values.includes(v as T)) throw generic(`Parameter '${key}' does not accept value '${v}'`);
  return v as T;
}

/** The members both commands share after `sync`, in QAPI order. */
function commonTail(args: Args): Omit<MirrorJobSpec, 'type' | 'device' | 'target' | 'sync' | 'jobId' | 'replaces'> {
  const spec: Omit<MirrorJobSpec, 'type' | 'device' | 'target' | 'sync' | 'jobId' | 'replaces'> = {};
  const speed = optSpeed(args);
  if (speed !== undefined) spec.speed = speed;
  const granularity = optUint32(args, 'granularity');
  if (granularity !== undefined) spec.granularity = granularity;
  const bufSize = optInt(args, 'buf-size');
  if (bufSize !== undefined) spec.bufSize = bufSize;
  const onSourceError = enumArg(args, 'on-source-error', ERROR_POLICIES, false);
  if (onSourceError !== undefined) spec.onSourceError = onSourceError;
  const onTargetError = enumArg(args, 'on-target-error', ERROR_POLICIES, false);
  if (onTargetError !== undefined) spec.onTargetError = onTargetError;
  return spec;
}

/** The members after copy-mode (auto-finalize, auto-dismiss). */
function finalizeArgs(args: Args, spec: Partial<MirrorJobSpec>): void {
  const autoFinalize = optBool(args, 'auto-finalize');
  if (autoFinalize !== undefined) spec.autoFinalize = autoFinalize;
  const autoDismiss = optBool(args, 'auto-dismiss');
  if (autoDismiss !== undefined) spec.autoDismiss = autoDismiss;
}

/** QEMU qmp_get_root_bs: a mirror's device has no parent node. */
function checkRoot(layer: BlockLayer, node: BlockNode): void {
  if (!layer.isRootNode(node)) throw generic('Need a root block node');
}

/** blockdev-mirror: mirrors `device` onto the existing node `target`. */
export async function blockdevMirror(args: Args, layer: BlockLayer): Promise<Record<string, never>> {
  const jobId = str(args, 'job-id', false);
  const device = str(args, 'device', true);
  const target = str(args, 'target', true);
  const replaces = str(args, 'replaces', false);
  const sync = enumArg(args, 'sync', SYNC_MODES, true)!;
  const spec: MirrorJobSpec = { type: 'mirror', device, target, sync, ...commonTail(args) };
  if (jobId !== undefined) spec.jobId = jobId;
  if (replaces !== undefined) spec.replaces = replaces;
  const filterNodeName = str(args, 'filter-node-name', false);
  if (filterNodeName !== undefined) spec.filterNodeName = filterNodeName;
  const copyMode = enumArg(args, 'copy-mode', COPY_MODES, false);
  if (copyMode !== undefined) spec.copyMode = copyMode;
  finalizeArgs(args, spec);
  only(args, ['job-id', 'device', 'target', 'replaces', 'sync', 'speed', 'granularity', 'buf-size', 'on-source-error', 'on-target-error', 'filter-node-name', 'copy-mode', 'auto-finalize', 'auto-dismiss']);
  await layer.startJob(spec);
  return {};
}

/**
 * drive-mirror: mirrors `device` into the image file `target`, created anew with the source's
 * size (mode 'absolute-paths', format default the source's; with sync 'top' over the source's
 * backing, with 'none' over the source) or opened as it is (mode 'existing', format probed
 * unless given). The job owns the node it opened: after a pivot the
 * drives hold it; otherwise it closes with the job.
 */
export async function driveMirror(args: Args, layer: BlockLayer): Promise<Record<string, never>> {
  const jobId = str(args, 'job-id', false);
  const device = str(args, 'device', true);
  const file = str(args, 'target', true);
  const format = str(args, 'format', false);
  const nodeName = str(args, 'node-name', false);
  const replaces = str(args, 'replaces', false);
  const mode = enumArg(args, 'mode', NEW_IMAGE_MODES, false) ?? 'absolute-paths';
  const tail = commonTail(args);
  // QAPI reads sync after speed in DriveMirror.
  const sync = enumArg(args, 'sync', SYNC_MODES, true)!;
  const unmap = optBool(args, 'unmap');
  void unmap; // zero ranges are always written as write-zeroes (the target's driver decides how)
  const copyMode = enumArg(args, 'copy-mode', COPY_MODES, false);
  const spec: Partial<MirrorJobSpec> = {};
  finalizeArgs(args, spec);
  only(args, ['job-id', 'device', 'target', 'format', 'node-name', 'replaces', 'mode', 'speed', 'sync', 'granularity', 'buf-size', 'on-source-error', 'on-target-error', 'unmap', 'copy-mode', 'auto-finalize', 'auto-dismiss']);
  const source = layer.findNode(device) ?? layer.drive(device)?.node;
  if (source === undefined) throw generic(`Cannot find device='${device}' nor node-name='${device}'`);
  checkRoot(layer, source);
  // A new image over the source's backing chain (top) or over the source itself (none), as QEMU's
  // MIRROR_SOURCE_BACKING_CHAIN: named in its header now, made its backing node at the pivot.
  const backing = mode === 'existing' || sync === 'full' ? undefined : sync === 'none' ? source : source.child('backing');
  const targetFormat = format ?? (mode === 'existing' ? undefined : source.driver.name);
  if (backing !== undefined && targetFormat === 'raw') throw generic("Backing file not supported for file format 'raw'");
  if (mode === 'absolute-paths') {
    const chain = backing === undefined ? {} : { backing: imageFilename(backing), backingFormat: backing.driver.name };
    await createImage(file, { format: targetFormat ?? 'raw', size: source.length, ...chain } as never, { layer });
  }
  const options = imageOptions(file, targetFormat === undefined ? {} : { format: targetFormat }) as NodeOptions;
  delete options.readOnly;
  if (options.file !== undefined) delete (options.file as Record<string, unknown>).readOnly;
  if (nodeName !== undefined) options.nodeName = nodeName;
  // The source's chain is shared at the pivot, not opened a second time from the header.
  if (backing !== undefined) (options as Record<string, unknown>).backing = null;
  const target: BlockNode = await layer.openNode(options as never);
  try {
    await layer.startJob({
      type: 'mirror',
      device,
      target,
      sync,
      // A target over a backing chain reads that chain after the pivot: its zeroes must be written.
      targetZeroInit: mode === 'absolute-paths' && backing === undefined,
      ...(backing === undefined ? {} : { targetBacking: backing }),
      ...tail,
      ...spec,
      ...(jobId === undefined ? {} : { jobId }),
      ...(replaces === undefined ? {} : { replaces }),
      ...(copyMode === undefined ? {} : { copyMode }),
    });
  } finally {
    // The job holds its own reference (or never started).
    await target.unref();
  }
  return {};
}
