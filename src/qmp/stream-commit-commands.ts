/**
 * QMP's block-stream and block-commit (qapi/block-core.json of QEMU 7.2): their arguments read
 * as QAPI reads them, then the layer's stream and commit jobs. The job's events and control are
 * job-commands.ts's.
 */
import { isBlockError } from '../errors.js';
import type { JobErrorPolicy } from '../jobs/job.js';
import type { BlockLayer } from '../layer.js';
import { type Args, generic, only, optBool, optSpeed, str } from './qapi-args.js';
import { QmpError } from './wire.js';

const ON_ERROR: readonly JobErrorPolicy[] = ['report', 'ignore', 'enospc', 'stop', 'auto'];

/** An optional BlockdevOnError. */
function onError(args: Args): JobErrorPolicy | undefined {
  const v = str(args, 'on-error', false);
  if (v === undefined) return undefined;
  if (!ON_ERROR.includes(v as JobErrorPolicy)) throw generic(`Parameter 'on-error' does not accept value '${v}'`);
  return v as JobErrorPolicy;
}

/** The members both commands share. */
function common(args: Args) {
  return {
    jobId: str(args, 'job-id', false),
    device: str(args, 'device', true),
    speed: optSpeed(args),
    onError: onError(args),
    filterNodeName: str(args, 'filter-node-name', false),
    autoFinalize: optBool(args, 'auto-finalize'),
    autoDismiss: optBool(args, 'auto-dismiss'),
    base: str(args, 'base', false),
    baseNode: str(args, 'base-node', false),
    backingFile: str(args, 'backing-file', false),
  };
}

/** block-stream. */
export async function blockStream(args: Args, layer: BlockLayer): Promise<Record<string, never>> {
  only(args, ['job-id', 'device', 'base', 'base-node', 'backing-file', 'bottom', 'speed', 'on-error', 'filter-node-name', 'auto-finalize', 'auto-dismiss']);
  const spec = { type: 'stream' as const, ...common(args), bottom: str(args, 'bottom', false) };
  await layer.startJob(spec);
  return {};
}

/** block-commit (an unknown device is DeviceNotFound: libvirt probes with it). */
export async function blockCommit(args: Args, layer: BlockLayer): Promise<Record<string, never>> {
  only(args, ['job-id', 'device', 'base-node', 'base', 'top-node', 'top', 'backing-file', 'speed', 'on-error', 'filter-node-name', 'auto-finalize', 'auto-dismiss']);
  const spec = { type: 'commit' as const, ...common(args), top: str(args, 'top', false), topNode: str(args, 'top-node', false) };
  // QEMU qmp_get_root_bs: the device must be a root (no node above it).
  const node = layer.findNode(spec.device) ?? layer.drive(spec.device)?.node;
  if (node !== undefined && !layer.isRootNode(node)) throw generic('Need a root block node');
  try {
    await layer.startJob(spec);
  } catch (e) {
    if (isBlockError(e, 'ENOENT') && e.field === 'device') throw new QmpError('DeviceNotFound', e.message);
    throw e;
  }
  return {};
}
