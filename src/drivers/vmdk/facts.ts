// What the vmdk driver is before its module loads (the built-in stub's facts, and the driver's own).
import * as z from 'zod';
import { builtOnce } from '../../node/lazy-driver.js';
import { probeDescriptor } from './descriptor.js';
import { hasCowdMagic, hasSparseMagic } from './header.js';

/** qemu-img's on/off for a boolean `-o` option (a boolean from a library caller too). */
const onOff = () => z.union([z.boolean(), z.enum(['on', 'off'])]).transform((v) => v === true || v === 'on');

/** The subformats qemu-img creates; the flat and split ones need extent files beside the descriptor. */
export const VMDK_SUBFORMATS = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized'] as const;

export const vmdkFacts = {
  name: 'vmdk',
  capabilities: { kind: 'format', supportsBacking: true, keepsMetadata: true },
  children: { file: 'required', backing: 'optional' },
  // COWD too, as QEMU: such a file must not be taken for raw (open then says it is not supported).
  probe: (head: Uint8Array) => (hasSparseMagic(head) || hasCowdMagic(head) ? 100 : probeDescriptor(head)),
  schema: builtOnce(() =>
    z
      .object({
        /** @internal real paths of the images above this one, to refuse parent loops. */
        backingChain: z.array(z.string()).default([]),
      })
      .strict(),
  ),
  /** qemu-img create -f vmdk's `-o` options (size and backing_file/backing_fmt are given apart). */
  createSchema: builtOnce(() =>
    z
      .object({
        subformat: z.enum(VMDK_SUBFORMATS).default('monolithicSparse'),
        adapter_type: z.enum(['ide', 'buslogic', 'lsilogic', 'legacyESX']).default('ide'),
        /** ddb.virtualHWVersion; default 4, or 6 with compat6. */
        hwversion: z.string().min(1).max(16).regex(/^[\w.]+$/, 'letters, digits, dots').optional(),
        compat6: onOff().default(false),
        /** ddb.toolsVersion. */
        toolsversion: z.string().min(1).max(16).regex(/^[\w.]+$/, 'letters, digits, dots').default('2147483647'),
        zeroed_grain: onOff().default(false),
      })
      .strict(),
  ),
  checks: true,
} as const;
