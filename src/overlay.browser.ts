// The browser build's temporary overlays (QEMU snapshot=on): no temp dir here, so the qcow2
// overlay lives on a memory node that grows as clusters are allocated, and goes with the drive.
import { parseCreateOptions, qcow2Settings } from './create/options.js';
import { planQcow2 } from './create/qcow2-layout.js';
import type { NodeOptions } from './node/driver.js';
import type { BlockNode } from './node/node.js';

export async function openWithTemporaryOverlay(openNode: (options: NodeOptions) => Promise<BlockNode>, base: NodeOptions): Promise<BlockNode> {
  const below = await openNode({ ...base, readOnly: true });
  try {
    const size = Math.ceil(below.length / 512) * 512;
    const plan = planQcow2(qcow2Settings(parseCreateOptions({ format: 'qcow2', size }), size));
    const mem = await openNode({ driver: 'memory', size: plan.fileLength });
    try {
      for (const w of plan.writes) await mem.write(w.offset, w.data);
      return await openNode({ driver: 'qcow2', file: mem, backing: below });
    } finally {
      await mem.unref();
    }
  } finally {
    await below.unref();
  }
}
