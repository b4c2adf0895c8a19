import fc from 'fast-check';
import type { ThrottleOptions } from '../../src/throttle/limits.js';

const bucketArb = (name: string) =>
  fc.record({
    avg: fc.integer({ min: 1, max: 1e9 }),
    burst: fc.option(fc.record({ extra: fc.integer({ min: 0, max: 1e9 }), length: fc.option(fc.integer({ min: 1, max: 100 }), { nil: undefined }) }), {
      nil: undefined,
    }),
  }).map(({ avg, burst }) => {
    const out: Record<string, number> = { [name]: avg };
    if (burst) {
      out[`${name}Max`] = avg + burst.extra;
      if (burst.length !== undefined) out[`${name}MaxLength`] = burst.length;
    }
    return out;
  });

/** One kind (bps or iops): nothing, the total bucket, or read and/or write buckets. */
const kindArb = (kind: 'bps' | 'iops') =>
  fc.oneof(
    fc.constant({}),
    bucketArb(`${kind}Total`),
    fc.tuple(fc.option(bucketArb(`${kind}Read`), { nil: undefined }), fc.option(bucketArb(`${kind}Write`), { nil: undefined })).map(([r, w]) => ({ ...r, ...w })),
  );

/** Random limits that satisfy QEMU's rules by construction, with an optional group. */
export const validThrottleArb: fc.Arbitrary<ThrottleOptions> = fc
  .tuple(kindArb('bps'), kindArb('iops'), fc.option(fc.integer({ min: 1, max: 1 << 20 }), { nil: undefined }), fc.option(fc.stringMatching(/^[a-z][a-z0-9,]{0,8}$/), { nil: undefined }))
  .map(([bps, iops, size, group]) => {
    const out: ThrottleOptions = { ...bps, ...iops };
    if (size !== undefined && Object.keys(iops).length > 0) out.iopsSize = size;
    if (group !== undefined) out.group = group;
    return out;
  })
  .filter((l) => Object.keys(l).some((k) => k !== 'group'));
