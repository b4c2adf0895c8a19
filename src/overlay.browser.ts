// The browser build's temporary overlays (QEMU snapshot=on): no temp dir here, so the qcow2
// overlay lives on a memory node that grows as clusters are allocated, and goes with the drive.
import type { NodeOptions } from './node/driver.js';
import type { BlockNode } from './node/node.js';
import { openUnderTemporaryOverlay } from './temporary-overlay.js';

export function openWithTemporaryOverlay(openNode: (options: NodeOptions) => Promise<BlockNode>, base: NodeOptions): Promise<BlockNode> {
  return openUnderTemporaryOverlay(openNode, base, (length) => openNode({ driver: 'memory', size: length }));
}
