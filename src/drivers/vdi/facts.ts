// What the vdi driver is before its module loads (the built-in stub's facts, and the driver's own).
import * as z from 'zod';
import { builtOnce } from '../../node/lazy-driver.js';
import { hasVdiSignature } from './header.js';

/** qemu-img's boolean words, as `-o static=on` spells them, or a boolean. */
const onOff = () =>
  z
    .union([z.boolean(), z.enum(['on', 'off', 'true', 'false', 'yes', 'no'])], { error: 'must be on or off' })
    .transform((v) => v === true || v === 'on' || v === 'true' || v === 'yes');

export const vdiFacts = {
  name: 'vdi',
  capabilities: { kind: 'format', keepsMetadata: true },
  children: { file: 'required' },
  probe: (head: Uint8Array) => (hasVdiSignature(head) ? 100 : 0),
  schema: builtOnce(() => z.object({}).strict()),
  /** `qemu-img create -f vdi -o …` options (block/vdi.c vdi_create_opts; vdi has no subformat). */
  createSchema: builtOnce(() =>
    z
      .object({
        /** A static (preallocated) image: every block has its place in the file from the start (qemu-img `static`, default off). */
        static: onOff().default(false),
      })
      .strict(),
  ),
  checks: true,
} as const;
