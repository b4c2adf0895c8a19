import { BlockError } from '../../errors.js';
import { defineDriver, type DriverInstance } from '../../node/driver.js';
import { checkVhdx } from './check.js';
import { vhdxCreator } from './create.js';
import { vhdxFacts } from './facts.js';
import { vhdxInstance } from './instance.js';
import { openVhdx } from './open.js';
import { openParent } from './parent.js';

export { hasVhdxSignature } from './facts.js';

/** Hyper-V's VHDX format (QEMU's vhdx): dynamic, fixed and differencing images, log replay, writes, create, check. */
export const vhdxDriver = defineDriver({
  name: vhdxFacts.name,
  capabilities: vhdxFacts.capabilities,
  schema: vhdxFacts.schema(),
  probe: vhdxFacts.probe,
  children: vhdxFacts.children,
  create: vhdxCreator,
  check: checkVhdx,
  async open(ctx): Promise<DriverInstance> {
    const file = ctx.children.get('file')!;
    const writable = !ctx.readOnly;
    const opened = await openVhdx(file, writable, ctx.nodeName);
    if (!opened.meta.hasParent && ctx.children.has('backing')) {
      throw new BlockError('EINVAL', 'backing: the image is not a differencing VHDX (no has_parent)', { node: ctx.nodeName, field: 'backing' });
    }
    // QEMU 7.2 refuses differencing images (ENOTSUP); we read and write them through their parent.
    const parent = opened.meta.hasParent ? await openParent(ctx, file, opened.meta) : undefined;
    return vhdxInstance(file, opened, writable, ctx.nodeName, parent);
  },
});
