/** Arbitraries for the option-parser tests: valid limits over QEMU's whole ranges. */
import fc from 'fast-check';
import { BUCKET_NAMES, type ThrottleLimits, type ThrottleOptions } from '../../src/throttle/limits.js';

const VALUE_MAX = 1e15;
const LENGTH_MAX = 4_294_967_295;

/** A rate in [1, 1e15], biased towards both ends as well as ordinary figures. */
const rateArb = fc.oneof(fc.integer({ min: 1, max: 100_000 }), fc.integer({ min: 1, max: VALUE_MAX }), fc.constantFrom(1, VALUE_MAX));

/** One bucket: avg, maybe a burst rate ≥ avg, maybe a burst length that QEMU accepts for it. */
const bucketArb = (name: string) =>
  fc
    .record({
      avg: rateArb,
      extra: fc.option(fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: VALUE_MAX })), { nil: undefined }),
      length: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
      lengthOneWithoutMax: fc.boolean(),
    })
    .map(({ avg, extra, length, lengthOneWithoutMax }) => {
      const out: Record<string, number> = { [name]: avg };
      if (extra !== undefined) {
        const max = Math.min(VALUE_MAX, avg + extra);
        out[`${name}Max`] = max;
        if (length !== undefined) {
          const top = Math.min(LENGTH_MAX, Math.floor(VALUE_MAX / max));
          out[`${name}MaxLength`] = Math.max(1, Math.min(top, 1 + Math.floor(length * top)));
        }
      } else if (lengthOneWithoutMax) out[`${name}MaxLength`] = 1; // valid: length 1 needs no burst rate
      return out;
    });

/** One kind (bps or iops): nothing, the total bucket, or read and/or write buckets. */
const kindArb = (kind: 'bps' | 'iops') =>
  fc.oneof(
    fc.constant({}),
    bucketArb(`${kind}Total`),
    fc
      .tuple(fc.option(bucketArb(`${kind}Read`), { nil: undefined }), fc.option(bucketArb(`${kind}Write`), { nil: undefined }))
      .map(([r, w]) => ({ ...r, ...w })),
  );

/** Group names with the characters each syntax must escape (`,` `&` `<` `>` quotes `=`), no outer spaces. */
export const groupArb = fc
  .string({ unit: fc.constantFrom('a', 'b', 'Z', '0', '9', '-', '_', '.', ',', ',', '&', '<', '>', '"', "'", '=', ' ', ';'), minLength: 1, maxLength: 24, size: 'max' })
  .filter((g) => g.trim() === g && g !== '');

/** Random limits that satisfy QEMU's rules by construction (at least one limit), with an optional group. */
export const wideThrottleArb: fc.Arbitrary<ThrottleOptions> = fc
  .tuple(kindArb('bps'), kindArb('iops'), fc.option(fc.oneof(fc.integer({ min: 1, max: 1 << 20 }), fc.integer({ min: 1, max: VALUE_MAX })), { nil: undefined }), fc.option(groupArb, { nil: undefined }))
  .map(([bps, iops, size, group]) => {
    const out: ThrottleOptions = { ...bps, ...iops };
    if (size !== undefined && Object.keys(iops).length > 0) out.iopsSize = size;
    if (group !== undefined) out.group = group;
    return out;
  })
  .filter((l) => Object.keys(l).some((k) => k !== 'group'));

/** Limits with any mix of fields and values around QEMU's boundaries, valid or not (no negatives). */
export const anyLimitsArb: fc.Arbitrary<ThrottleLimits> = fc
  .array(
    fc.tuple(
      fc.constantFrom(...BUCKET_NAMES.flatMap((b) => [b, `${b}Max`, `${b}MaxLength`]), 'iopsSize'),
      fc.oneof(fc.constantFrom(0, 1, 2, 3, 100, 4096, VALUE_MAX, VALUE_MAX + 1, LENGTH_MAX), fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: VALUE_MAX + 10 })),
    ),
    { minLength: 0, maxLength: 8, size: 'max' },
  )
  .map((pairs) => {
    const out: Record<string, number> = {};
    for (const [k, v] of pairs) out[k] = k.endsWith('Length') ? Math.min(v, LENGTH_MAX) : v;
    return out as ThrottleLimits;
  });

/** The normal form of limits: 0 avg/max and length 1 dropped (what fromConfig gives). */
export function normalize(limits: ThrottleLimits): ThrottleLimits {
  const out: ThrottleLimits = {};
  for (const [k, v] of Object.entries(limits) as [keyof ThrottleLimits, number][]) {
    if (v === 0 || v === undefined) continue;
    if (k.endsWith('Length') && (v === 1 || !limits[k.slice(0, -'Length'.length) as keyof ThrottleLimits])) continue;
    out[k] = v;
  }
  return out;
}
