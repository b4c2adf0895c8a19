import { isHttpUrl } from './drivers/http/facts.js';
import { parseRbdFilename } from './drivers/rbd/filename.js';
import { BlockError } from './errors.js';
import type { BlockDriver, NodeOptions } from './node/driver.js';
import type { BlockNode } from './node/node.js';
import { PROBE_DRIVER, probeNode } from './node/probe.js';
import { isNbdUri, parseNbdUri } from './drivers/nbd/uri.js';
import { fileExists } from './platform/files.js';

/** Options of an image's node tree with a drive's `snapshot` key (an internal snapshot's name). */
export interface ImageNodeOptions extends NodeOptions {
  snapshot?: string;
}

/**
 * Node options for an image path or spec (CLI targets and openImage): `rbd:pool/image[@snap][:opt=val…]` (QEMU's rbd
 * syntax), an NBD URI (`nbd://host[:port]/export`, `nbd+unix:///export?socket=path`, `nbds://…`), an `http://`/`https://`
 * URL (read-only), or a file. The format is used as given, else probed when the tree opens (`driver: 'auto'` over the
 * protocol node: qcow2 by its magic, else raw); nothing is read here but whether a file exists.
 *
 * The options are read-only from the format node down, as the
 * inspecting commands (info, map, convert's input) open their images: a read-only qcow2 node opens its
 * backing chain and data file read-only too, and neither repairs a dirty image nor refuses one that is
 * marked corrupt or carries persistent bitmaps. Callers that write remove `readOnly` at both levels.
 */
export function imageOptions(target: string, opts: { format?: string; snapshot?: string } = {}): ImageNodeOptions {
  const snapshot = opts.snapshot ? { snapshot: opts.snapshot } : {};
  if (target.startsWith('rbd:')) {
    const o = parseRbdFilename(target) as ImageNodeOptions;
    if (opts.format !== undefined && opts.format !== 'raw') {
      throw new BlockError('ENOTSUP', `format '${opts.format}' over rbd is not supported (rbd images are raw)`, { field: 'format' });
    }
    if (opts.snapshot !== undefined) o.snapshot = opts.snapshot;
    o.readOnly = true;
    return o;
  }
  if (isNbdUri(target)) {
    const nbd = { ...parseNbdUri(target), readOnly: true } as NodeOptions;
    return overRemote('nbd', nbd, nbd, opts.format, snapshot, opts.snapshot);
  }
  if (isHttpUrl(target)) {
    const http = { driver: 'http', url: target, readOnly: true };
    return overRemote('http', http, { driver: 'raw', readOnly: true, file: http }, opts.format, snapshot, opts.snapshot);
  }
  if (!fileExists(target)) throw new BlockError('ENOENT', `${target}: no such file`, { path: target });
  const file = { driver: 'file', filename: target, readOnly: true };
  const format = opts.format ?? PROBE_DRIVER;
  if (format === 'qcow2' || format === PROBE_DRIVER) return { driver: format, readOnly: true, file, ...snapshot };
  if (opts.snapshot !== undefined) throw new BlockError('EINVAL', `--snapshot: ${format} images have no snapshots`, { field: 'snapshot' });
  return { driver: format, readOnly: true, file };
}

/** An nbd or http image: qcow2 or raw (`raw` its raw tree), probed when no format is given. */
function overRemote(protocol: string, file: NodeOptions, raw: NodeOptions, format: string | undefined, snapshot: { snapshot?: string }, asked: string | undefined): ImageNodeOptions {
  if (format === undefined || format === 'qcow2') return { driver: format ?? PROBE_DRIVER, readOnly: true, file, ...snapshot };
  if (format !== 'raw') throw new BlockError('ENOTSUP', `format '${format}' over ${protocol} is not supported (raw or qcow2)`, { field: 'format' });
  if (asked !== undefined) throw new BlockError('EINVAL', '--snapshot: raw images have no snapshots', { field: 'snapshot' });
  return raw;
}

/**
 * The format `driver: 'auto'` picks for the image on the protocol node `file` describes: the node
 * opens read-only through `open` for its first bytes and is released.
 */
export async function probeImageFormat(open: (options: NodeOptions) => Promise<BlockNode>, drivers: Iterable<BlockDriver>, file: NodeOptions): Promise<string> {
  const node = await open({ ...file, readOnly: true });
  try {
    return (await probeNode(drivers, node)).name;
  } finally {
    await node.unref();
  }
}
