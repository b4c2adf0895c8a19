import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import { repairRefcounts } from './check.js';

/**
 * Repairs an image whose dirty bit is set (lazy refcounts, then a crash) before it is opened
 * read-write, as QEMU does on open: a check that fixes leaks and errors and rebuilds the
 * refcounts if needed, then clears the dirty bit. The caller re-reads the header (the refcount
 * table may have moved).
 */
export async function repairDirtyImage(file: BlockNode, nodeName: string): Promise<void> {
  try {
    await repairRefcounts(file);
  } catch (e) {
    if (e instanceof BlockError) throw new BlockError(e.code, `qcow2: dirty image: ${e.message}`, { field: 'incompatible_features', node: nodeName, cause: e });
    throw e;
  }
}
