import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type MetadataIO, Refcounts } from '../../src/drivers/qcow2/refcounts.js';
import { writeEntry } from '../../src/drivers/qcow2/refcount-entries.js';

const BITS = 9; // 512-byte clusters: a 16-bit block covers 256 clusters, so lists cross blocks
const CS = 2 ** BITS;

/** A file in memory: cluster 0 header, 1 the refcount table, 2 its first block (clusters 0-2 referenced). */
function image(order: number): Uint8Array {
  const file = new Uint8Array(3 * CS);
  new DataView(file.buffer).setUint32(CS + 4, 2 * CS);
  for (let i = 0; i < 3; i++) writeEntry(file.subarray(2 * CS), i, order, 1);
  return file;
}

function open(file: { bytes: Uint8Array }, order: number): Refcounts {
  const io: MetadataIO = {
    read: async (offset, length) => {
      const out = new Uint8Array(length);
      out.set(file.bytes.subarray(offset, offset + length));
      return out;
    },
    write: async (offset, data) => {
      if (offset + data.length > file.bytes.length) {
        const grown = new Uint8Array(offset + data.length);
        grown.set(file.bytes);
        file.bytes = grown;
      }
      file.bytes.set(data, offset);
    },
    sync: async () => {},
  };
  return new Refcounts(io, BITS, order, CS, 1, file.bytes.slice(CS, 2 * CS), file.bytes.length, 4 * CS, async () => {});
}

/** Two identical images, each with `clusters` clusters allocated one at a time (so new blocks get made too). */
async function twins(order: number, clusters: number) {
  const a = { bytes: image(order) };
  const b = { bytes: image(order) };
  const ra = open(a, order);
  const rb = open(b, order);
  const allocated: number[] = [];
  for (let i = 0; i < clusters; i++) {
    allocated.push((await ra.allocate(1)) / CS);
    await rb.allocate(1);
  }
  return { a, b, ra, rb, allocated };
}

const errorOf = async (p: Promise<unknown>) => p.then(() => undefined, (e: { code?: string }) => e.code ?? 'error');

describe('qcow2 refcounts changed in bulk', () => {
  it('incrementMany, releaseClusters + applyReleases and getMany do what increment, release and get do one cluster at a time', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(1, 3, 4, 5),
        fc.integer({ min: 1, max: 700 }),
        fc.array(fc.nat(), { maxLength: 400 }),
        fc.array(fc.nat(), { maxLength: 400 }),
        async (order, count, ups, downs) => {
          const { a, b, ra, rb, allocated } = await twins(order, count);
          const pick = (l: number[]) => l.map((x) => allocated[x % allocated.length]!);
          const up = pick(ups);
          // a cluster is released at most as often as it was raised, plus once for its allocation
          const seen = new Map<number, number>();
          for (const k of up) seen.set(k, (seen.get(k) ?? 0) + 1);
          const down = pick(downs).filter((k) => {
            const left = (seen.get(k) ?? 0) + 1;
            seen.set(k, left - 2);
            return left > 0;
          });
          const ea = await errorOf(ra.incrementMany(up, up.length));
          let eb: string | undefined;
          for (const k of up) if (eb === undefined) eb = await errorOf(rb.increment(k));
          expect(ea).toBe(eb);
          if (ea !== undefined) return; // 2-bit entries overflow: both refuse at the same cluster
          ra.releaseClusters(down, down.length);
          for (const k of down) rb.release(k * CS, CS);
          await ra.applyReleases();
          await rb.applyReleases();
          const list = [...allocated, 0, 1, 2, allocated.length + 900];
          const got = new Float64Array(list.length);
          await ra.getMany(list, list.length, got);
          for (let i = 0; i < list.length; i++) expect(got[i]).toBe(await rb.get(list[i]!));
          await ra.writeBack();
          await rb.writeBack();
          expect(Buffer.from(a.bytes).equals(Buffer.from(b.bytes))).toBe(true);
          // what was freed is reused first, by both
          expect(await ra.allocate(1)).toBe(await rb.allocate(1));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('refuses a refcount past the width (ENOSPC) and one below 0 (ECORRUPT), as one at a time', async () => {
    const { ra, allocated } = await twins(0, 3);
    expect(await errorOf(ra.incrementMany(allocated, allocated.length))).toBe('ENOSPC');
    const { ra: r16, allocated: some } = await twins(4, 2);
    r16.releaseClusters([some[0]!, some[0]!], 2);
    expect(await errorOf(r16.applyReleases())).toBe('ECORRUPT');
  });
});
