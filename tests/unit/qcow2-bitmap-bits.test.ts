import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addClusterBits, clusterBits } from '../../src/drivers/qcow2/bitmap-bits.js';
import { BITMAP_FLAG_AUTO, encodeDirectory, withBitmapsExtension } from '../../src/drivers/qcow2/bitmap-directory.js';
import { readBitmapDirectory } from '../../src/drivers/qcow2/bitmaps.js';
import { buildHeaderCluster } from '../../src/drivers/qcow2/create-header.js';
import { parseHeader } from '../../src/drivers/qcow2/header.js';
import { GranuleSet } from '../../src/node/granule-set.js';

describe('qcow2 bitmap bits', () => {
  it('granule i is bit i % 8 of byte i / 8 (QEMU serializes little-endian 64-bit words)', () => {
    const s = new GranuleSet(1 << 16);
    s.add(0, 1);
    s.add(9, 10);
    s.add(63, 65);
    const out = new Uint8Array(16);
    expect(clusterBits(s, 0, out)).toBe(true);
    expect([...out]).toEqual([0x01, 0x02, 0, 0, 0, 0, 0, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0]);
    expect(clusterBits(s, 128, out)).toBe(false);
    expect(out.every((b) => b === 0)).toBe(true);
  });

  it('writing a set into clusters of bits and reading them back gives the same set (any runs, any cluster size)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(512, 1024, 4096),
        fc.integer({ min: 1, max: 40_000 }),
        fc.array(fc.tuple(fc.nat(40_000), fc.integer({ min: 1, max: 9000 })), { maxLength: 12 }),
        (clusterSize, size, runs) => {
          const s = new GranuleSet(size);
          for (const [a, n] of runs) s.add(a, a + n);
          const per = clusterSize * 8;
          const back = new GranuleSet(size);
          const bits = new Uint8Array(clusterSize);
          for (let first = 0; first < size; first += per) if (clusterBits(s, first, bits)) addClusterBits(back, first, bits);
          expect(back.count).toBe(s.count);
          expect([...back.runs()]).toEqual([...s.runs()]);
        },
      ),
    );
  });
});

describe('qcow2 bitmap directory and header extension', () => {
  const fields = {
    version: 3 as const,
    clusterBits: 16,
    size: 1 << 30,
    l1Size: 2,
    l1TableOffset: 3 * 65536,
    refcountTableOffset: 65536,
    refcountTableClusters: 1,
    refcountOrder: 4,
    lazyRefcounts: false,
    extendedL2: false,
    compressionType: 'zlib' as const,
    dataFileRaw: false,
    backingFile: 'base.qcow2',
    backingFormat: 'qcow2',
  };

  it('a directory we encode reads back as the same entries; the header points at it and keeps the backing file and its format', async () => {
    const entries = [
      { name: 'a', granularity: 65536, granularityBits: 16, flags: BITMAP_FLAG_AUTO, tableOffset: 5 * 65536, tableSize: 1, shadowed: false },
      { name: 'long name é', granularity: 512, granularityBits: 9, flags: 0, tableOffset: 6 * 65536, tableSize: 4, shadowed: false },
    ];
    const dir = encodeDirectory(entries);
    const ext = { count: 2, directoryOffset: 7 * 65536, directorySize: dir.length };
    const file = 1 << 20;
    const h = parseHeader(withBitmapsExtension(buildHeaderCluster(fields), 112, ext), file);
    expect(h.bitmaps).toEqual(ext);
    expect([h.backingFile, h.backingFormat]).toEqual(['base.qcow2', 'qcow2']);
    const read = async (offset: number, length: number) => {
      const b = new Uint8Array(length);
      if (offset === ext.directoryOffset) b.set(dir.subarray(0, length));
      return b; // bitmap tables read as zeros: no data clusters
    };
    expect(await readBitmapDirectory(h, read)).toEqual(entries);
    // Removing the extension clears the autoclear bit and keeps the rest.
    const gone = parseHeader(withBitmapsExtension(withBitmapsExtension(buildHeaderCluster(fields), 112, ext), 112, undefined), file);
    expect(gone.bitmaps).toBeUndefined();
    expect(gone.autoclear).toBe(0);
    expect([gone.backingFile, gone.backingFormat]).toEqual(['base.qcow2', 'qcow2']);
  });
});
