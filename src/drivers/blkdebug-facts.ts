// What the blkdebug driver is before its module loads (the built-in stub's facts, and the
// driver's own): its schemas are built on first use, like every lazily loaded driver's.
import * as z from 'zod';
import { builtOnce } from '../node/lazy-driver.js';

export const BLKDEBUG_EVENTS = ['read', 'write', 'write-zeroes', 'discard', 'flush'] as const;

/** One failure rule (QEMU blkdebug inject-error). */
export const blkdebugRuleSchema = builtOnce(() =>
  z
    .object({
      /** Operation (or operations) the rule applies to. */
      event: z.union([z.enum(BLKDEBUG_EVENTS), z.array(z.enum(BLKDEBUG_EVENTS)).min(1)]),
      /** Error code to fail with (QEMU blkdebug `errno`). */
      code: z.enum(['EIO', 'ENOSPC', 'EROFS', 'EACCES', 'ENOTSUP', 'ECORRUPT']).default('EIO'),
      /** Only requests that touch this byte fail (QEMU `sector`, in bytes here). */
      offset: z.number().int().nonnegative().optional(),
      /** Fail only once, then the rule is gone (QEMU `once`). */
      once: z.boolean().default(false),
      /** Fail only from the n-th matching request on (1 = the first). */
      after: z.number().int().positive().default(1),
    })
    .strict(),
);

export const blkdebugFacts = {
  name: 'blkdebug',
  capabilities: { kind: 'filter' },
  children: { file: 'required' },
  schema: builtOnce(() =>
    z
      .object({
        /** Failure rules (QEMU inject-error). */
        rules: z.array(blkdebugRuleSchema()).default([]),
        /** Request alignment to impose (QEMU blkdebug `align`), to exercise read-modify-write. */
        align: z.number().int().positive().default(1),
        /** Largest request the node passes down at once (QEMU `max-transfer`). */
        maxTransfer: z.number().int().nonnegative().default(0),
      })
      .strict(),
  ),
} as const;
