// What the vpc driver is before its module loads (the built-in stub's facts, and the driver's own).
import * as z from 'zod';
import { builtOnce } from '../../node/lazy-driver.js';
import { hasCookie } from './footer.js';
import * as L from './limits.js';

/** qemu-img's on/off, also as a boolean. */
const onOff = () => z.union([z.boolean(), z.enum(['on', 'off']).transform((v) => v === 'on')]);

export const vpcFacts = {
  name: 'vpc',
  capabilities: { kind: 'format', supportsBacking: true, keepsMetadata: true },
  children: { file: 'required', backing: 'optional' },
  // As QEMU's vpc_probe: the footer copy at offset 0. A fixed image (its footer only at the end) is not probed.
  probe: (head: Uint8Array) => (hasCookie(head, 0, L.FOOTER_COOKIE) ? 100 : 0),
  schema: builtOnce(() =>
    z
      .object({
        /** How the virtual size is taken from the footer, whatever the creator (QEMU `force_size_calc`): `chs` or `current_size`. */
        forceSizeCalc: z.enum(['chs', 'current_size']).optional(),
        /** @internal real paths of the differencing images above this one, to refuse loops. */
        backingChain: z.array(z.string()).default([]),
      })
      .strict(),
  ),
  /** qemu-img create -f vpc's `-o` options. */
  createSchema: builtOnce(() =>
    z
      .object({
        /** `dynamic` (default: grows as written) or `fixed` (the whole disk, then the footer). */
        subformat: z.enum(['dynamic', 'fixed']).default('dynamic'),
        /** Keep the size exactly as given instead of rounding it to a CHS geometry (creator 'qem2', as Azure wants). */
        force_size: onOff().default(false),
      })
      .strict(),
  ),
} as const;
