import * as z from 'zod';
import { defineDriver } from '../../node/driver.js';
import { vpcCreator } from './create.js';
import { hasCookie } from './footer.js';
import * as L from './limits.js';
import { openVpc } from './open.js';

const schema = z
  .object({
    /** How the virtual size is taken from the footer, whatever the creator (QEMU `force_size_calc`): `chs` or `current_size`. */
    forceSizeCalc: z.enum(['chs', 'current_size']).optional(),
    /** @internal real paths of the differencing images above this one, to refuse loops. */
    backingChain: z.array(z.string()).default([]),
  })
  .strict();

/**
 * QEMU's `vpc` format (VHD: Virtual PC, Hyper-V, Azure, Xen): fixed, dynamic and differencing
 * images (a differencing image's parent opens as its `backing` child); writes grow dynamic images.
 */
export const vpcDriver = defineDriver({
  name: 'vpc',
  capabilities: { kind: 'format', supportsBacking: true, keepsMetadata: true },
  schema,
  // As QEMU's vpc_probe: the footer copy at offset 0. A fixed image (its footer only at the end) is not probed.
  probe: (head: Uint8Array) => (hasCookie(head, 0, L.FOOTER_COOKIE) ? 100 : 0),
  children: { file: 'required', backing: 'optional' },
  open: (ctx) => openVpc(ctx),
  create: vpcCreator,
});
