import { isHttpUrl } from './drivers/http/index.js';
import { probeHttpFormat } from './drivers/http/probe.js';
import { probeFormat } from './drivers/qcow2/index.js';
import { parseRbdFilename } from './drivers/rbd/filename.js';
import { BlockError } from './errors.js';
import type { DriveOptions } from './layer.js';
import { probeNbdFormat } from './nbd/probe.js';
import { isNbdUri, parseNbdUri } from './drivers/nbd/uri.js';
import { fileExists } from './platform/files.js';

/**
 * Drive options for an image path or spec (CLI targets and openImage): `rbd:pool/image[@snap][:opt=val…]` (QEMU's rbd
 * syntax), an NBD URI (`nbd://host[:port]/export`, `nbd+unix:///export?socket=path`, `nbds://…`), an `http://`/`https://`
 * URL (read-only), or a file; the format is given or probed (qcow2 by its magic, else raw; over NBD by reading
 * its first block, over http with one range request).
 *
 * The options are read-only from the format node down, as the
 * inspecting commands (info, map, convert's input) open their images: a read-only qcow2 node opens its
 * backing chain and data file read-only too, and neither repairs a dirty image nor refuses one that is
 * marked corrupt or carries persistent bitmaps. Callers that write remove `readOnly` at both levels.
 */
export async function targetOptions(target: string, opts: { format?: string; snapshot?: string } = {}): Promise<DriveOptions> {
  if (target.startsWith('rbd:')) {
    const o = parseRbdFilename(target) as DriveOptions;
    if (opts.format !== undefined && opts.format !== 'raw') {
      throw new BlockError('ENOTSUP', `format '${opts.format}' over rbd is not supported (rbd images are raw)`, { field: 'format' });
    }
    if (opts.snapshot !== undefined) o.snapshot = opts.snapshot;
    o.readOnly = true;
    return o;
  }
  if (isNbdUri(target)) {
    const nbd = { ...parseNbdUri(target), readOnly: true };
    const format = opts.format ?? (await probeNbdFormat(nbd));
    if (format === 'qcow2') return { driver: 'qcow2', readOnly: true, file: nbd, ...(opts.snapshot ? { snapshot: opts.snapshot } : {}) };
    if (format !== 'raw') throw new BlockError('ENOTSUP', `format '${format}' over nbd is not supported (raw or qcow2)`, { field: 'format' });
    if (opts.snapshot !== undefined) throw new BlockError('EINVAL', '--snapshot: raw images have no snapshots', { field: 'snapshot' });
    return nbd as DriveOptions;
  }
  if (isHttpUrl(target)) {
    const http = { driver: 'http', url: target, readOnly: true };
    const format = opts.format ?? (await probeHttpFormat(target));
    if (format === 'qcow2') return { driver: 'qcow2', readOnly: true, file: http, ...(opts.snapshot ? { snapshot: opts.snapshot } : {}) };
    if (format !== 'raw') throw new BlockError('ENOTSUP', `format '${format}' over http is not supported (raw or qcow2)`, { field: 'format' });
    if (opts.snapshot !== undefined) throw new BlockError('EINVAL', '--snapshot: raw images have no snapshots', { field: 'snapshot' });
    return { driver: 'raw', readOnly: true, file: http };
  }
  if (!fileExists(target)) throw new BlockError('ENOENT', `${target}: no such file`, { path: target });
  const format = opts.format ?? (await probeFormat(target));
  const file = { driver: 'file', filename: target, readOnly: true };
  if (format === 'qcow2') return { driver: 'qcow2', readOnly: true, file, ...(opts.snapshot ? { snapshot: opts.snapshot } : {}) };
  if (opts.snapshot !== undefined) throw new BlockError('EINVAL', `--snapshot: ${format} images have no snapshots`, { field: 'snapshot' });
  return { driver: format, readOnly: true, file };
}

