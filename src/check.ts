import { openImageFile } from './drivers/file/image-file.js';
import type { CheckResult, RepairMode } from './drivers/qcow2/check-result.js';
import { checkQcow2 } from './drivers/qcow2/check.js';
import type { Qcow2File } from './drivers/qcow2/image-file.js';
import { probeFormat } from './drivers/qcow2/index.js';
import { BlockError } from './errors.js';
import { probeImageFormat } from './image-options.js';
import { BlockLayer } from './layer.js';
import { PROBE_DRIVER } from './node/probe.js';
import type { NodeOptions } from './node/driver.js';

/** Options of {@link checkImage}. */
export interface CheckImageOptions {
  /** Fix leaks, or leaks and corruptions (qemu-img check -r). */
  repair?: RepairMode;
  /** Image format; probed when absent. Only qcow2 supports checks. */
  format?: string;
  /** Receives qemu-img's stderr lines: each finding and repair. */
  log?: (line: string) => void;
  /** The layer a protocol other than a local file opens in (its clock, its drivers); a private one by default. */
  layer?: BlockLayer;
}

const unsupported = (format: string) => new BlockError('ENOTSUP', `This image format does not support checks (${format})`, { field: 'format' });

/**
 * Checks a qcow2 image's metadata like `qemu-img check`: a path (format probed) or node options
 * (`{ driver: 'qcow2', file: {...} }`). With `repair`, fixes what qemu-img check -r fixes and
 * checks again, reporting the second check's counts with the first's fixed counts, as qemu-img
 * does. Rejects with ENOTSUP for formats without checks (raw).
 */
export async function checkImage(target: string | NodeOptions, opts: CheckImageOptions = {}): Promise<CheckResult> {
  const open = await openTarget(target, opts);
  try {
    const run = (repair?: RepairMode) => checkQcow2(open.file, { repair, filename: open.name, log: opts.log });
    const first = await run(opts.repair);
    if (!opts.repair || (first.corruptionsFixed === 0 && first.leaksFixed === 0)) return first;
    const again = await run();
    return { ...again, corruptionsFixed: first.corruptionsFixed, leaksFixed: first.leaksFixed };
  } finally {
    await open.close();
  }
}

/** The format `driver: 'auto'` would find over the file child `file`: a file's head is read directly, another protocol's through its node. */
async function probeTargetFormat(file: unknown, given: BlockLayer | undefined): Promise<string> {
  if (!file || typeof file !== 'object') throw new BlockError('EINVAL', 'file: the qcow2 node options need a file child', { field: 'file' });
  const o = file as NodeOptions;
  if (o.driver === 'file' && typeof o.filename === 'string') return probeFormat(o.filename);
  const layer = given ?? new BlockLayer();
  try {
    return await probeImageFormat((x) => layer.openNode(x), layer.drivers.list(), o);
  } finally {
    if (given === undefined) await layer.close();
  }
}

/** The image file behind a target, opened for a check or a repair. */
async function openTarget(target: string | NodeOptions, opts: CheckImageOptions): Promise<{ file: Qcow2File; name: string; close(): Promise<void> }> {
  const writable = opts.repair !== undefined;
  if (typeof target === 'string') {
    const format = opts.format ?? (await probeFormat(target));
    if (format !== 'qcow2') throw unsupported(format);
    const file = await openImageFile(target, writable);
    return { file, name: target, close: () => file.close() };
  }
  const format = target.driver === PROBE_DRIVER ? await probeTargetFormat(target.file, opts.layer) : target.driver;
  if (format !== 'qcow2') throw unsupported(format);
  const child = target.file;
  if (typeof child === 'string') {
    const file = await openImageFile(child, writable);
    return { file, name: child, close: () => file.close() };
  }
  if (!child || typeof child !== 'object') throw new BlockError('EINVAL', 'file: the qcow2 node options need a file child', { field: 'file' });
  const fileOptions = child as NodeOptions;
  // (with forceShare, QEMU's force-share: through the file driver, which takes the locks it asks)
  if (fileOptions.driver === 'file' && typeof fileOptions.filename === 'string' && fileOptions.forceShare !== true) {
    const file = await openImageFile(fileOptions.filename, writable);
    return { file, name: fileOptions.filename, close: () => file.close() };
  }
  // Another protocol (nbd, rbd, ...): checked through its node, which cannot grow for a rebuild.
  const layer = opts.layer ?? new BlockLayer();
  const release = () => (opts.layer === undefined ? layer.close() : Promise.resolve());
  try {
    const node = await layer.openNode({ ...fileOptions, readOnly: !writable });
    return {
      file: node,
      name: String(fileOptions.filename ?? node.name),
      close: async () => {
        await node.unref();
        await release();
      },
    };
  } catch (e) {
    await release();
    throw e;
  }
}
