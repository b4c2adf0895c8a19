import * as z from 'zod';
import { defineDriver, type DriverInstance } from '../../node/driver.js';
import { checkVhdx } from './check.js';
import { vhdxCreator } from './create.js';
import { FILE_SIGNATURE } from './limits.js';
import { vhdxInstance } from './instance.js';
import { openVhdx } from './open.js';

const schema = z.object({}).strict();

/** True when `head` starts with "vhdxfile" (QEMU vhdx_probe). */
export function hasVhdxSignature(head: Uint8Array): boolean {
  if (head.length < 8) return false;
  for (let i = 0; i < 8; i++) if (head[i] !== FILE_SIGNATURE.charCodeAt(i)) return false;
  return true;
}

/** Hyper-V's VHDX format (QEMU's vhdx): dynamic and fixed images, log replay, writes, create, check. */
export const vhdxDriver = defineDriver({
  name: 'vhdx',
  capabilities: { kind: 'format', keepsMetadata: true },
  schema,
  probe: (head: Uint8Array) => (hasVhdxSignature(head) ? 100 : 0),
  children: { file: 'required' },
  create: vhdxCreator,
  check: checkVhdx,
  async open(ctx): Promise<DriverInstance> {
    const file = ctx.children.get('file')!;
    const writable = !ctx.readOnly;
    const opened = await openVhdx(file, writable, ctx.nodeName);
    return vhdxInstance(file, opened, writable, ctx.nodeName);
  },
});
