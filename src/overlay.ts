import nodeFs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type { NodeOptions } from './node/driver.js';
import type { BlockNode } from './node/node.js';
import { openUnderTemporaryOverlay } from './temporary-overlay.js';

/** Where temporary overlays go (QEMU: $TMPDIR, else /var/tmp); overridable for tests. */
export function overlayDir(): string {
  return process.env.TMPDIR || os.tmpdir();
}

/**
 * QEMU's `-drive snapshot=on` on Node: the overlay is a qcow2 file in {@link overlayDir}, unlinked
 * as soon as its node is open, so it disappears when the drive closes, and also when the process dies.
 */
export function openWithTemporaryOverlay(openNode: (options: NodeOptions) => Promise<BlockNode>, base: NodeOptions): Promise<BlockNode> {
  return openUnderTemporaryOverlay(openNode, base, async (length) => {
    // loaded here: node:crypto is costly to start with, and only snapshot=on needs it (require, not
    // import(): the bundled command runs as a script, where import() has no loader)
    const { randomBytes } = createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto');
    const file = path.join(overlayDir(), `blocklayer-snapshot-${randomBytes(6).toString('hex')}.qcow2`);
    // node:fs/promises read here, not at start (it loads readline and the watchers)
    const fs = nodeFs.promises;
    try {
      const created = await fs.open(file, 'wx');
      await created.truncate(length).finally(() => created.close());
      return await openNode({ driver: 'file', filename: file });
    } finally {
      await fs.rm(file, { force: true });
    }
  });
}
