import fs from 'node:fs';
import { parseRbdFilename } from './drivers/rbd/filename.js';
import { probeFormat } from './drivers/qcow2/index.js';
import { BlockError } from './errors.js';
import type { DriveOptions } from './layer.js';

/**
 * Drive options for an image path or spec (CLI targets and openImage): `rbd:pool/image[@snap][:opt=val…]` (QEMU's rbd
 * syntax), or a file whose format is given or probed (qcow2 by its magic, else raw).
 */
export async function targetOptions(target: string, opts: { format?: string; snapshot?: string } = {}): Promise<DriveOptions> {
  if (target.startsWith('rbd:')) {
    const o = parseRbdFilename(target) as DriveOptions;
    if (opts.format !== undefined && opts.format !== 'raw') {
      throw new BlockError('ENOTSUP', `format '${opts.format}' over rbd is not supported (rbd images are raw)`, { field: 'format' });
    }
    if (opts.snapshot !== undefined) o.snapshot = opts.snapshot;
    if (o.snapshot !== undefined) o.readOnly = true;
    return o;
  }
  if (!fs.existsSync(target)) throw new BlockError('ENOENT', `${target}: no such file`, { path: target });
  const format = opts.format ?? (await probeFormat(target));
  const file = { driver: 'file', filename: target, readOnly: true };
  if (format === 'qcow2') return { driver: 'qcow2', file, ...(opts.snapshot ? { snapshot: opts.snapshot } : {}) };
  if (opts.snapshot !== undefined) throw new BlockError('EINVAL', `--snapshot: ${format} images have no snapshots`, { field: 'snapshot' });
  return { driver: format, readOnly: true, file };
}

