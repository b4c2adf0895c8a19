/**
 * QMP drive-backup (QEMU 7.2 blockdev.c drive_backup_prepare; deprecated there, still present):
 * a backup into an image file named by `target`, created anew with the source's size (mode
 * absolute-paths, the default; format default the source's) or opened as it is (mode existing,
 * format probed unless given). A new image gets a backing file as QEMU gives it: sync=top the
 * source's backing file, sync=none the source itself (the live node becomes its backing child,
 * so unchanged data reads through). Also a transaction action, prepared (image made and opened,
 * job created) before any action commits.
 */
import { isBlockError } from '../errors.js';
import { imageOptions } from '../image-options.js';
import type { BackupJobSpec } from '../jobs/backup.js';
import type { BlockLayer } from '../layer.js';
import type { NodeOptions } from '../node/driver.js';
import type { BlockNode } from '../node/node.js';
import { createImage } from '../tools/create.js';
import { parseBackupCommon, prepareBlockdevBackup } from './backup-commands.js';
import type { PreparedAction } from './bitmap-commands.js';
import { type Args, generic, str } from './qapi-args.js';

/** QAPI DriveBackup: BackupCommon with `target` a file name, and `format`, `mode`. */
export interface DriveBackupArgs {
  spec: BackupJobSpec & { target: string };
  format?: string;
  mode: 'existing' | 'absolute-paths';
}

export function parseDriveBackup(args: Args, path = ''): DriveBackupArgs {
  let format: string | undefined;
  let mode: string | undefined;
  const spec = parseBackupCommon(args, path, ['format', 'mode'], () => {
    format = str(args, 'format', false, path);
    mode = str(args, 'mode', false, path);
    if (mode !== undefined && mode !== 'existing' && mode !== 'absolute-paths') throw generic(`Parameter '${path}mode' does not accept value '${mode}'`);
  });
  return { spec: spec as BackupJobSpec & { target: string }, ...(format === undefined ? {} : { format }), mode: (mode ?? 'absolute-paths') as DriveBackupArgs['mode'] };
}

/** The image file a node reads (QEMU bs->filename). */
function imageFilename(node: BlockNode): string | undefined {
  for (let n: BlockNode | undefined = node; n; n = n.child('file')) {
    const f = n.options.filename;
    if (typeof f === 'string') return f;
  }
  return undefined;
}

/** Makes (or opens) the target image as QEMU's drive_backup_prepare does; the caller owns the node. */
async function openTarget(layer: BlockLayer, a: DriveBackupArgs): Promise<BlockNode> {
  const { spec } = a;
  const source = layer.findNode(spec.device) ?? layer.driveRoot(spec.device);
  if (source === undefined) throw generic(`Cannot find device='${spec.device}' nor node-name='${spec.device}'`);
  const format = a.format ?? (a.mode === 'existing' ? undefined : source.driver.name);
  // sync=top without a backing chain is a full backup, and the new image has no backing file.
  let backing: BlockNode | undefined;
  if (spec.sync === 'top') {
    backing = source.child('backing');
    if (backing === undefined) spec.sync = 'full';
  }
  const liveBacking = spec.sync === 'none' ? source : undefined;
  if (liveBacking !== undefined) backing = source;
  if (a.mode === 'absolute-paths') {
    const backingFile = backing === undefined ? undefined : imageFilename(backing);
    const create: Record<string, unknown> = { format: format!, size: source.length };
    if (backing !== undefined && backingFile !== undefined) Object.assign(create, { backing: backingFile, backingFormat: backing.driver.name });
    try {
      await createImage(spec.target, create as never, { layer });
    } catch (e) {
      throw isBlockError(e) ? generic(`Could not create '${spec.target}': ${e.message}`) : e;
    }
  }
  let options: NodeOptions;
  try {
    options = imageOptions(spec.target, format === undefined ? {} : { format }) as NodeOptions;
  } catch (e) {
    if (isBlockError(e, 'ENOENT')) throw generic(`Could not open '${spec.target}': No such file or directory`);
    throw e;
  }
  delete options.readOnly;
  if (options.file !== undefined) delete (options.file as Record<string, unknown>).readOnly;
  if (liveBacking !== undefined) (options as Record<string, unknown>).backing = liveBacking;
  return layer.openNode(options as never);
}

/** The drive-backup action: the target made and opened, the job created; commit starts it, abort cancels it and closes the target. */
export async function prepareDriveBackup(layer: BlockLayer, a: DriveBackupArgs): Promise<PreparedAction> {
  const target = await openTarget(layer, a);
  try {
    const prepared = prepareBlockdevBackup(layer, { ...a.spec, target });
    return prepared;
  } finally {
    // The job holds its own reference (or was never made).
    await target.unref();
  }
}

/** QMP drive-backup. */
export async function driveBackup(layer: BlockLayer, args: Args): Promise<Record<string, never>> {
  const prepared = await prepareDriveBackup(layer, parseDriveBackup(args));
  await prepared.commit();
  return {};
}
