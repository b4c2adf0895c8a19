// The browser build's overlays: there is no temp dir, so the temporary qcow2 lives on a memory node.
import { BlockError } from './errors.js';
import type { NodeOptions } from './node/driver.js';
import type { BlockNode } from './node/node.js';

export async function openWithTemporaryOverlay(_openNode: (options: NodeOptions) => Promise<BlockNode>, _base: NodeOptions): Promise<BlockNode> {
  throw new BlockError('ENOTSUP', 'snapshot: true is not available in this build yet', { field: 'snapshot' });
}
