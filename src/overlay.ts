import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createImage } from './create/index.js';
import type { NodeOptions } from './node/driver.js';
import type { BlockNode } from './node/node.js';

/** Where temporary overlays go (QEMU: $TMPDIR, else /var/tmp); overridable for tests. */
export function overlayDir(): string {
  return process.env.TMPDIR || os.tmpdir();
}

/**
 * QEMU's `-drive snapshot=on`: the node graph `base` describes is opened read-only under a
 * temporary qcow2 overlay, which takes every write. The overlay file is unlinked as soon as it
 * is open, so it disappears when the drive closes, and also when the process dies.
 */
export async function openWithTemporaryOverlay(openNode: (options: NodeOptions) => Promise<BlockNode>, base: NodeOptions): Promise<BlockNode> {
  const below = await openNode({ ...base, readOnly: true });
  const file = path.join(overlayDir(), `blocklayer-snapshot-${randomBytes(6).toString('hex')}.qcow2`);
  try {
    // qcow2 sizes are whole sectors: round up, the base's tail reads through unchanged.
    await createImage(file, { format: 'qcow2', size: Math.ceil(below.length / 512) * 512 });
    return await openNode({
      driver: 'qcow2',
      file: { driver: 'file', filename: file },
      backing: below,
    });
  } finally {
    await fs.rm(file, { force: true });
    // The overlay holds its own reference to the base now (or failed to open: then this closes it).
    await below.unref();
  }
}
