import { BlockError } from '../../errors.js';
import { type DriverInstance, defineDriver } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { vmdkCheck } from './check.js';
import { vmdkCreator } from './create.js';
import { vmdkFacts } from './facts.js';
import { vmdkInstance } from './instance.js';
import { openDisk } from './open-extents.js';
import { checkParentCid, openParent } from './parent.js';
import { readClamped } from './sparse-extent.js';

/** VMware's VMDK (QEMU vmdk): monolithicSparse, streamOptimized, monolithicFlat and the twoGbMaxExtent pairs; writes to sparse and flat extents. */
export const vmdkDriver = defineDriver({
  name: vmdkFacts.name,
  capabilities: vmdkFacts.capabilities,
  schema: vmdkFacts.schema(),
  probe: vmdkFacts.probe,
  children: vmdkFacts.children,
  create: vmdkCreator,
  check: vmdkCheck,
  async open(ctx): Promise<DriverInstance> {
    const file = ctx.children.get('file')!;
    let backing: BlockNode | undefined;
    let cidChecked = false;
    const fallback = async (offset: number, target: Uint8Array) => {
      if (!backing) return void target.fill(0);
      if (!cidChecked) {
        checkParentCid(backing, disk.descriptor.parentCid, ctx.nodeName);
        cidChecked = true;
      }
      await readClamped(backing, offset, target);
    };
    const disk = await openDisk(ctx, file, fallback);
    backing = await openParent(ctx, file, disk.descriptor.parentFileNameHint);
    if (!ctx.readOnly && disk.version === 3 && disk.createType !== 'streamOptimized') {
      throw new BlockError('EINVAL', 'vmdk: VMDK version 3 must be read only (changed block tracking)', { field: 'version', node: ctx.nodeName });
    }
    return vmdkInstance({ ...disk, nodeName: ctx.nodeName, backing: () => backing });
  },
});
