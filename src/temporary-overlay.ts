import { planQcow2 } from './drivers/qcow2/create-layout.js';
import type { NodeOptions } from './node/driver.js';
import type { BlockNode } from './node/node.js';

/**
 * QEMU's `-drive snapshot=on`: the node graph `base` describes is opened read-only under a
 * temporary qcow2 overlay, which takes every write. The overlay is laid out (planQcow2) onto the
 * protocol node `openFile` gives for its initial length (zeroed, growable); that node goes with the drive.
 * The twins overlay.ts (a temp file) and overlay.browser.ts (a memory node) only choose it.
 */
export async function openUnderTemporaryOverlay(
  openNode: (options: NodeOptions) => Promise<BlockNode>,
  base: NodeOptions,
  openFile: (length: number) => Promise<BlockNode>,
): Promise<BlockNode> {
  // loaded here: building qemu-img create's option schemas costs every start, and only snapshot=on needs them
  const { parseCreateOptions, qcow2Settings } = await import('./options/create.js');
  const below = await openNode({ ...base, readOnly: true });
  try {
    // qcow2 sizes are whole sectors: round up, the base's tail reads through unchanged.
    const size = Math.ceil(below.length / 512) * 512;
    const plan = planQcow2(qcow2Settings(parseCreateOptions({ format: 'qcow2', size }), size));
    const file = await openFile(plan.fileLength);
    try {
      for (const w of plan.writes) await file.write(w.offset, w.data);
      return await openNode({ driver: 'qcow2', file, backing: below });
    } finally {
      // The overlay holds its own reference to its file now (or failed to open: then this closes it).
      await file.unref();
    }
  } finally {
    // Likewise for the base.
    await below.unref();
  }
}
