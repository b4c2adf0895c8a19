import { BlockError } from '../errors.js';
import { BlockLayer } from '../layer.js';
import type { CheckResult, RepairMode } from '../node/check-result.js';
import type { NodeOptions } from '../node/driver.js';
import { PROBE_DRIVER, probeNode } from '../node/probe.js';

/** Options of {@link checkImage}. */
export interface CheckImageOptions {
  /** Fix leaks, or leaks and corruptions (qemu-img check -r). */
  repair?: RepairMode;
  /** Image format; probed when absent. Only qcow2 supports checks. */
  format?: string;
  /** Receives qemu-img's stderr lines: each finding and repair. */
  log?: (line: string) => void;
  /** The layer the image file opens in (its clock, its drivers); a private one by default. */
  layer?: BlockLayer;
}

const unsupported = (format: string) => new BlockError('ENOTSUP', `This image format does not support checks (${format})`, { field: 'format' });

/**
 * Checks an image's metadata like `qemu-img check`: a path (format probed) or node options
 * (`{ driver: 'qcow2', file: {...} }`). With `repair`, fixes what qemu-img check -r fixes and
 * checks again, reporting the second check's counts with the first's fixed counts, as qemu-img
 * does. The format driver's `check` runs on the image's protocol node, opened in the layer
 * read-only, or read-write for a repair; the format node itself is not opened (a check must
 * read what an open refuses or repairs: a corrupt or dirty image). Rejects with ENOTSUP for
 * formats without checks (raw).
 */
export async function checkImage(target: string | NodeOptions, opts: CheckImageOptions = {}): Promise<CheckResult> {
  const given = typeof target === 'string' ? (opts.format ?? PROBE_DRIVER) : target.driver;
  const layer = opts.layer ?? new BlockLayer();
  try {
    const knownDriver = (name: string) => (layer.drivers.has(name) ? layer.drivers.get(name) : undefined);
    if (given !== PROBE_DRIVER && !knownDriver(given)?.check) throw unsupported(given);
    const file = protocolOf(target);
    const node = await layer.openNode({ ...file, readOnly: opts.repair === undefined });
    try {
      // 'auto': the format is probed over the node just opened, as opening would.
      const driver = given === PROBE_DRIVER ? await probeNode(layer.drivers.list(), node) : knownDriver(given);
      if (!driver?.check) throw unsupported(driver?.name ?? given);
      return await driver.check(node, { repair: opts.repair, filename: String(file.filename ?? node.name), log: opts.log, openNode: (o) => layer.openNode({ ...(o as NodeOptions), readOnly: true }) });
    } finally {
      await node.unref();
    }
  } finally {
    if (opts.layer === undefined) await layer.close();
  }
}

/** The options of a target's protocol node. */
function protocolOf(target: string | NodeOptions): NodeOptions {
  if (typeof target === 'string') return { driver: 'file', filename: target };
  const child = target.file;
  if (typeof child === 'string') return { driver: 'file', filename: child };
  if (!child || typeof child !== 'object') throw new BlockError('EINVAL', `file: the ${target.driver} node options need a file child`, { field: 'file' });
  return child as NodeOptions;
}
