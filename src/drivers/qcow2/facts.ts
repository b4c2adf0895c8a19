// What the qcow2 driver is before its module loads (the built-in stub's facts, and the driver's own).
import * as z from 'zod';
import { builtOnce } from '../../node/lazy-driver.js';
import { sizeSchema } from '../../options/size.js';
import { hasQcow2Magic } from './backing.js';

export const qcow2Facts = {
  name: 'qcow2',
  capabilities: { kind: 'format', supportsBacking: true, keepsMetadata: true },
  children: { file: 'required', backing: 'optional', 'data-file': 'optional' },
  probe: (head: Uint8Array) => (hasQcow2Magic(head) ? 100 : 0),
  schema: builtOnce(() =>
    z
      .object({
        /** Bytes of L2 tables to cache (QEMU l2-cache-size); default 4 MiB. */
        l2CacheSize: sizeSchema().default(4 * 1024 * 1024),
        /** Bytes of refcount blocks to cache (QEMU refcount-cache-size); default 1 MiB. */
        refcountCacheSize: sizeSchema().default(1024 * 1024),
        /** Open this internal snapshot (id or name) instead of the current state. */
        snapshot: z.string().min(1).optional(),
        /** @internal real paths of the overlays above this image, to refuse backing loops. */
        backingChain: z.array(z.string()).default([]),
      })
      .strict(),
  ),
  checks: true,
} as const;
