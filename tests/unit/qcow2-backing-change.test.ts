import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { headerWithBacking } from '../../src/drivers/qcow2/backing-change.js';
import { withBitmapsExtension } from '../../src/drivers/qcow2/bitmap-directory.js';
import { buildHeaderCluster, type HeaderFields } from '../../src/drivers/qcow2/create-header.js';
import { parseHeader } from '../../src/drivers/qcow2/header.js';

/** Header fields of a small image with `clusterBits` (tables past the header, inside a 1 MiB file). */
function fields(clusterBits: number, version: 2 | 3, o: Partial<HeaderFields>): HeaderFields {
  const cs = 2 ** clusterBits;
  return {
    version,
    clusterBits,
    size: 1 << 20,
    l1Size: Math.ceil((1 << 20) / (cs * (cs / 8))),
    l1TableOffset: 3 * cs,
    refcountTableOffset: cs,
    refcountTableClusters: 1,
    refcountOrder: 4,
    lazyRefcounts: false,
    extendedL2: false,
    compressionType: 'zlib',
    dataFileRaw: false,
    ...o,
  };
}

/** The used bytes in a whole cluster (what the header cluster on disk holds). */
function inCluster(used: Uint8Array, clusterSize: number): Uint8Array {
  const out = new Uint8Array(clusterSize);
  out.set(used);
  return out;
}

const nameArb = fc.string({ unit: fc.constantFrom('a', 'b', '/', '.', 'é', '-'), minLength: 1, maxLength: 300 });
const formatArb = fc.option(fc.constantFrom('qcow2', 'raw', 'vmdk'), { nil: undefined });

describe('headerWithBacking (QEMU qcow2_update_header layout)', () => {
  it('names the backing file and format parseHeader reads back; the other extensions and fields stay', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(9, 12, 16),
        fc.constantFrom<2 | 3>(2, 3),
        fc.option(fc.tuple(nameArb, formatArb), { nil: undefined }),
        fc.option(fc.tuple(nameArb, formatArb), { nil: null }),
        fc.boolean(),
        fc.option(fc.constant('data.raw'), { nil: undefined }),
        (bits, version, before, after, bitmaps, dataFile) => {
          const cs = 2 ** bits;
          const o: Partial<HeaderFields> = {};
          if (before) {
            o.backingFile = before[0];
            if (before[1] !== undefined) o.backingFormat = before[1];
          }
          if (version === 3 && dataFile) o.dataFile = dataFile;
          let cluster: Uint8Array;
          try {
            cluster = buildHeaderCluster(fields(bits, version, o));
            if (bitmaps && version === 3) cluster = withBitmapsExtension(cluster, 112, { count: 1, directoryOffset: 5 * cs, directorySize: 40 });
          } catch {
            return; // the starting header does not fit in the cluster: nothing to change
          }
          const headerLength = version === 3 ? 112 : 72;
          const old = parseHeader(cluster, 1 << 20);
          // the bytes the new layout takes: the header and extensions without a backing file, the format extension, the name
          const bare = headerWithBacking(cluster, headerLength, null, undefined, 'n').length;
          const format = after?.[1];
          const needed = bare + (after !== null && format !== undefined ? 8 + Math.ceil(format.length / 8) * 8 : 0) + Buffer.byteLength(after?.[0] ?? '');
          let next: Uint8Array;
          try {
            next = headerWithBacking(cluster, headerLength, after === null ? null : after[0], format, 'n');
          } catch (e) {
            expect(e).toMatchObject({ code: 'ENOSPC' });
            expect(needed).toBeGreaterThan(cs);
            return;
          }
          expect(next.length).toBe(needed);
          expect(needed).toBeLessThanOrEqual(cs);
          const h = parseHeader(inCluster(next, cs), 1 << 20);
          expect(h.backingFile).toBe(after === null ? undefined : after[0]);
          expect(h.backingFormat).toBe(after === null ? undefined : after[1]);
          expect(h.dataFile).toBe(old.dataFile);
          expect(h.bitmaps).toEqual(old.bitmaps);
          expect(h.featureNames).toEqual(old.featureNames);
          expect({ ...h, backingFile: 0, backingFormat: 0 }).toEqual({ ...old, backingFile: 0, backingFormat: 0 });
          // the name follows the end marker: nothing after it in the used bytes
          if (after !== null) expect(Buffer.from(next).subarray(next.length - Buffer.byteLength(after[0])).toString()).toBe(after[0]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('is QEMU layout: backing format extension first, end marker, then the name (byte for byte as qemu-img create writes it)', () => {
    const made = buildHeaderCluster(fields(16, 3, { backingFile: 'base.qcow2', backingFormat: 'qcow2' }));
    const plain = buildHeaderCluster(fields(16, 3, {}));
    const changed = inCluster(headerWithBacking(plain, 112, 'base.qcow2', 'qcow2', 'n'), 65536);
    expect(Buffer.from(changed).equals(Buffer.from(made))).toBe(true);
    const removed = inCluster(headerWithBacking(made, 112, null, 'qcow2', 'n'), 65536);
    expect(Buffer.from(removed).equals(Buffer.from(plain))).toBe(true);
  });

  it('ENOSPC when the name does not fit in the header cluster', () => {
    const plain = buildHeaderCluster(fields(9, 3, {}));
    expect(() => headerWithBacking(plain, 112, 'x'.repeat(400), 'raw', 'n')).toThrow(expect.objectContaining({ code: 'ENOSPC' }));
    expect(headerWithBacking(plain, 112, 'x'.repeat(200), 'raw', 'n').length).toBeLessThanOrEqual(512);
  });
});
