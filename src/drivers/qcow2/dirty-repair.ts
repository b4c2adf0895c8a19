import { BlockError } from '../../errors.js';

/**
 * Repairs the refcounts of an image whose dirty bit is set (lazy refcounts and a crash) before
 * it is opened read-write, as QEMU does on open. The refcount rebuild (checkImage) is written
 * separately; until it is wired in here, such images are refused.
 */
export async function repairDirtyImage(nodeName: string): Promise<void> {
  throw new BlockError('ENOTSUP', `qcow2: dirty image: needs refcount repair before it can be opened read-write (open it read-only, or repair it with qemu-img check -r all)`, {
    field: 'incompatible_features',
    node: nodeName,
  });
}
