import * as z from 'zod';
import { BlockError } from '../../errors.js';
import { type DriverInstance, defineDriver } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { vmdkCreator } from './create.js';
import { probeDescriptor } from './descriptor.js';
import { hasCowdMagic, hasSparseMagic } from './header.js';
import { vmdkInstance } from './instance.js';
import { openDisk } from './open-extents.js';
import { checkParentCid, openParent } from './parent.js';
import { readClamped } from './sparse-extent.js';

const schema = z
  .object({
    /** @internal real paths of the images above this one, to refuse parent loops. */
    backingChain: z.array(z.string()).default([]),
  })
  .strict();

/** VMware's VMDK (QEMU vmdk): monolithicSparse, streamOptimized, monolithicFlat and the twoGbMaxExtent pairs; writes to sparse and flat extents. */
export const vmdkDriver = defineDriver({
  name: 'vmdk',
  capabilities: { kind: 'format', supportsBacking: true, keepsMetadata: true },
  schema,
  // COWD too, as QEMU: such a file must not be taken for raw (open then says it is not supported).
  probe: (head: Uint8Array) => (hasSparseMagic(head) || hasCowdMagic(head) ? 100 : probeDescriptor(head)),
  children: { file: 'required', backing: 'optional' },
  create: vmdkCreator,
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
