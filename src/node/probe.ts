import { BlockError } from '../errors.js';
import type { BlockDriver } from './driver.js';
import type { BlockNode } from './node.js';

/**
 * The `driver` value that asks for probing (QEMU: a `-drive file=` without `format=`): the `file`
 * child opens first, its first bytes pick the format, and the format opens over that same node.
 */
export const PROBE_DRIVER = 'auto';

/** Bytes probing reads at least (one sector: qcow2's magic is in its first 4). */
export const PROBE_HEAD_BYTES = 512;

/** The first bytes of a node for probing: {@link PROBE_HEAD_BYTES} or its alignment if larger, fewer if it is shorter. */
export async function readProbeHead(node: BlockNode): Promise<Uint8Array> {
  const head = new Uint8Array(Math.min(node.length, Math.max(PROBE_HEAD_BYTES, node.alignment)));
  if (head.length > 0) await node.read(0, head);
  return head;
}

/** The format driver scoring `head` highest (QEMU bdrv_probe_all); the first registered wins a tie. */
export function pickFormat(drivers: Iterable<BlockDriver>, head: Uint8Array, filename?: string): BlockDriver {
  let best: BlockDriver | undefined;
  let bestScore = 0;
  for (const driver of drivers) {
    if (driver.capabilities.kind !== 'format' || driver.probe === undefined) continue;
    const score = driver.probe(head, filename);
    if (score > bestScore) {
      best = driver;
      bestScore = score;
    }
  }
  if (best === undefined) throw new BlockError('ENOTSUP', `could not determine the image format${filename ? ` of '${filename}'` : ''}`, { field: 'driver' });
  return best;
}

/** The name a protocol node is known by, for probes that look at it: its file name or URL. */
export function nodeFilename(node: BlockNode): string | undefined {
  const name = node.options.filename ?? node.options.url;
  return typeof name === 'string' ? name : undefined;
}

/** The format of the image on `node`, by its first bytes. */
export async function probeNode(drivers: Iterable<BlockDriver>, node: BlockNode): Promise<BlockDriver> {
  return pickFormat(drivers, await readProbeHead(node), nodeFilename(node));
}
