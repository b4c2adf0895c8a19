import fs from 'node:fs';
import { parseRbdFilename } from '../drivers/rbd/filename.js';
import { probeFormat } from '../drivers/qcow2/index.js';
import { BlockError } from '../errors.js';
import type { DriveOptions } from '../layer.js';

/**
 * Drive options for a command-line target: `rbd:pool/image[@snap][:opt=val…]` (QEMU's rbd
 * syntax), or a file whose format is given or probed (qcow2 by its magic, else raw).
 */
export async function targetOptions(target: string, opts: { format?: string; snapshot?: string } = {}): Promise<DriveOptions> {
  if (target.startsWith('rbd:')) {
    const o = parseRbdFilename(target) as DriveOptions;
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

/** Bytes with binary units, as qemu-img prints them ("2 MiB (2097152 bytes)"). */
export function humanSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const num = u === 0 ? String(v) : Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 3 : v < 100 ? 2 : 1).replace(/\.?0+$/, '');
  return `${num} ${units[u]}`;
}
