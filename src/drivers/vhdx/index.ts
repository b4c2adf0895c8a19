import * as z from 'zod';
import { BlockError } from '../../errors.js';
import { defineDriver, type DriverInstance } from '../../node/driver.js';
import { checkVhdx } from './check.js';
import { vhdxCreator } from './create.js';
import { FILE_SIGNATURE } from './limits.js';
import { vhdxInstance } from './instance.js';
import { openVhdx } from './open.js';
import { openParent } from './parent.js';

const schema = z
  .object({
    /** @internal real paths of the differencing images above this one, to refuse parent loops. */
    backingChain: z.array(z.string()).default([]),
  })
  .strict();

/** True when `head` starts with "vhdxfile" (QEMU vhdx_probe). */
export function hasVhdxSignature(head: Uint8Array): boolean {
  if (head.length < 8) return false;
  for (let i = 0; i < 8; i++) if (head[i] !== FILE_SIGNATURE.charCodeAt(i)) return false;
  return true;
}

/** Hyper-V's VHDX format (QEMU's vhdx): dynamic, fixed and differencing images, log replay, writes, create, check. */
export const vhdxDriver = defineDriver({
  name: 'vhdx',
  capabilities: { kind: 'format', supportsBacking: true, keepsMetadata: true },
  schema,
  probe: (head: Uint8Array) => (hasVhdxSignature(head) ? 100 : 0),
  children: { file: 'required', backing: 'optional' },
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
