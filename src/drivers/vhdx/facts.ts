// What the vhdx driver is before its module loads (the built-in stub's facts, and the driver's own).
import * as z from 'zod';
import { builtOnce } from '../../node/lazy-driver.js';
import { sizeSchema } from '../../options/size.js';
import * as L from './limits.js';

/** True when `head` starts with "vhdxfile" (QEMU vhdx_probe). */
export function hasVhdxSignature(head: Uint8Array): boolean {
  if (head.length < 8) return false;
  for (let i = 0; i < 8; i++) if (head[i] !== L.FILE_SIGNATURE.charCodeAt(i)) return false;
  return true;
}

export const vhdxFacts = {
  name: 'vhdx',
  capabilities: { kind: 'format', supportsBacking: true, keepsMetadata: true },
  children: { file: 'required', backing: 'optional' },
  probe: (head: Uint8Array) => (hasVhdxSignature(head) ? 100 : 0),
  schema: builtOnce(() =>
    z
      .object({
        /** @internal real paths of the differencing images above this one, to refuse parent loops. */
        backingChain: z.array(z.string()).default([]),
      })
      .strict(),
  ),
  /** qemu-img's `-o` options of vhdx, with its defaults. */
  createSchema: builtOnce(() =>
    z
      .object({
        /** `dynamic` (blocks allocated on write) or `fixed` (every block laid out at once). */
        subformat: z.enum(['dynamic', 'fixed']).default('dynamic'),
        /** Payload block size, rounded up to 1 MiB, at most 256 MiB; 0: chosen by size as QEMU does. */
        block_size: sizeSchema().default(0),
        /** Log size, rounded up to 1 MiB (at least 1 MiB, below 4 GiB). */
        log_size: sizeSchema().default(L.DEFAULT_LOG_SIZE),
        /** New blocks in the ZERO state (QEMU's non-standard default); off: NOT_PRESENT (dynamic) or FULLY_PRESENT (fixed). */
        block_state_zero: z
          .union([z.boolean(), z.enum(['on', 'off'])])
          .default(true)
          .transform((v) => v === true || v === 'on'),
      })
      .strict(),
  ),
  checks: true,
} as const;
