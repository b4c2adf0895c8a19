import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockError } from '../../src/errors.js';
import { vmdkDriver } from '../../src/drivers/vmdk/index.js';
import { descriptorText, parseDescriptor, probeDescriptor } from '../../src/drivers/vmdk/descriptor.js';
import { hasSparseMagic, parseFooter, parseSparseHeader, sparseLayout } from '../../src/drivers/vmdk/header.js';
import { checkNoOverlaps, type MetadataRange } from '../../src/drivers/vmdk/overlaps.js';

/** A header sector as qemu-img writes one for a 5 GiB monolithicSparse image. */
function header(patch: (v: DataView) => void = () => {}): Uint8Array {
  const b = new Uint8Array(512);
  const v = new DataView(b.buffer);
  b.set([0x4b, 0x44, 0x4d, 0x56]);
  v.setUint32(4, 1, true);
  v.setUint32(8, 3, true);
  v.setBigUint64(12, 10485760n, true);
  v.setBigUint64(20, 128n, true);
  v.setBigUint64(28, 1n, true);
  v.setBigUint64(36, 20n, true);
  v.setUint32(44, 512, true);
  v.setBigUint64(48, 21n, true);
  v.setBigUint64(56, 663n, true);
  v.setBigUint64(64, 1408n, true);
  patch(v);
  return b;
}
const FILE = 1408 * 512;

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof BlockError) return e.code;
    throw e;
  }
  return undefined;
}

describe('vmdk sparse header', () => {
  it("parses qemu-img's header and lays out its tables", () => {
    const h = parseSparseHeader(header());
    expect(h).toMatchObject({ version: 1, capacity: 10485760, grainSectors: 128, gtesPerGt: 512, gdOffset: 663, rgdOffset: 21, overhead: 1408 });
    expect(sparseLayout(h, FILE)).toMatchObject({ capacityBytes: 5 * 2 ** 30, grainBytes: 65536, gdEntries: 160, gdOffset: 663 * 512, rgdOffset: 21 * 512, compressed: false });
  });

  it('refuses a missing magic, unknown versions and table sizes, naming the field and its byte', () => {
    expect(hasSparseMagic(new TextEncoder().encode('version=1\n'))).toBe(false);
    expect(() => parseSparseHeader(new Uint8Array(512))).toThrow(/magic/);
    expect(code(() => parseSparseHeader(header((v) => v.setUint32(4, 4, true))))).toBe('ENOTSUP');
    expect(() => parseSparseHeader(header((v) => v.setUint32(44, 513, true)))).toThrow(/'numGTEsPerGT' \(byte 44\)/);
    expect(() => parseSparseHeader(header((v) => v.setBigUint64(20, 0x200001n, true)))).toThrow(/'grainSize' \(byte 20\)/);
    expect(() => parseSparseHeader(header((v) => v.setBigUint64(12, 1n << 63n, true)))).toThrow(/'capacity' \(byte 12\)/);
    expect(() => parseSparseHeader(new Uint8Array(100))).toThrow(/512 bytes/);
    const cowd = new Uint8Array(512);
    cowd.set(new TextEncoder().encode('COWD'));
    expect(code(() => parseSparseHeader(cowd))).toBe('ENOTSUP');
    expect(vmdkDriver.probe!(cowd)).toBe(100);
    expect(vmdkDriver.probe!(header())).toBe(100);
    expect(vmdkDriver.probe!(new Uint8Array(512).fill(0x41))).toBe(0);
  });

  it('refuses directories outside the file or on top of each other', () => {
    expect(() => sparseLayout(parseSparseHeader(header((v) => v.setBigUint64(56, 5000n, true))), FILE)).toThrow(/'gdOffset'/);
    expect(() => sparseLayout(parseSparseHeader(header((v) => v.setBigUint64(48, 663n, true))), FILE)).toThrow(/overlaps/);
    expect(() => sparseLayout(parseSparseHeader(header((v) => v.setUint16(77, 2, true))), FILE)).toThrow(/compressAlgorithm/);
  });

  it('reads the footer of a stream whose header says GD_AT_END', () => {
    const area = new Uint8Array(1536);
    const v = new DataView(area.buffer);
    v.setUint32(12, 3, true);
    area.set(header(), 512);
    expect(parseFooter(area, 10_000).gdOffset).toBe(663);
    v.setUint32(1024 + 12, 1, true);
    expect(() => parseFooter(area, 10_000)).toThrow(/end-of-stream marker \(byte 11024\)/);
  });

  it('any header bytes give a header or a BlockError, never another error (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 512, maxLength: 512 }), fc.nat(2 ** 40), (bytes, size) => {
        bytes.set([0x4b, 0x44, 0x4d, 0x56]);
        try {
          const h = parseSparseHeader(bytes);
          if (h.gdOffset !== undefined) sparseLayout(h, size);
        } catch (e) {
          expect(e).toBeInstanceOf(BlockError);
        }
      }),
    );
  });
});

describe('vmdk descriptor', () => {
  const text = [
    '# Disk DescriptorFile',
    'version=1',
    'CID=563c8b36',
    'parentCID=ffffffff',
    'createType="twoGbMaxExtentFlat"',
    'parentFileNameHint="base.vmdk"',
    '',
    '# Extent description',
    'RW 4194304 FLAT "a-f001.vmdk" 0',
    'RDONLY 2097152 FLAT "a-f002.vmdk" 16',
    'NOACCESS 8 FLAT "skip.vmdk" 0',
    'RW 2048 SPARSE "a-s003.vmdk"',
    '',
    'ddb.adapterType = "ide"',
    'ddb.geometry.heads = "16"',
  ].join('\r\n');

  it("parses qemu-img's descriptor: CIDs, create type, parent, extents, disk database", () => {
    const d = parseDescriptor(text);
    expect(d).toMatchObject({ version: 1, cid: 0x563c8b36, parentCid: 0xffffffff, createType: 'twoGbMaxExtentFlat', parentFileNameHint: 'base.vmdk' });
    expect(d.extents).toEqual([
      { access: 'RW', sectors: 4194304, type: 'FLAT', filename: 'a-f001.vmdk', offset: 0 },
      { access: 'RDONLY', sectors: 2097152, type: 'FLAT', filename: 'a-f002.vmdk', offset: 16 },
      { access: 'RW', sectors: 2048, type: 'SPARSE', filename: 'a-s003.vmdk', offset: 0 },
    ]);
    expect(d.ddb).toEqual({ adapterType: 'ide', 'geometry.heads': '16' });
  });

  it('refuses bad CIDs, flat extents without an offset, long names', () => {
    expect(() => parseDescriptor('CID=xyz\n')).toThrow(/CID/);
    expect(() => parseDescriptor('RW 8 FLAT "a.vmdk"\n')).toThrow(/needs an offset/);
    expect(() => parseDescriptor(`RW 8 SPARSE "${'a'.repeat(600)}"\n`)).toThrow(/file name/);
  });

  it('text ends at the first NUL of an embedded descriptor', () => {
    const b = new Uint8Array(64);
    b.set(new TextEncoder().encode('version=1\n'));
    expect(descriptorText(b)).toBe('version=1\n');
  });

  it('probes as QEMU does: comments and blank lines, then version=N', () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    expect(probeDescriptor(enc('# Disk DescriptorFile\nversion=1\nCID=1\n'))).toBe(100);
    expect(probeDescriptor(enc('  \r\nversion=3\r\n'))).toBe(100);
    expect(probeDescriptor(enc('version=4\n'))).toBe(0);
    expect(probeDescriptor(enc('hello\nversion=1\n'))).toBe(0);
    expect(probeDescriptor(new Uint8Array(512))).toBe(0);
  });

  it('any text parses or gives a BlockError (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), (s) => {
        try {
          parseDescriptor(s);
        } catch (e) {
          expect(e).toBeInstanceOf(BlockError);
        }
      }),
    );
  });
});

describe('vmdk metadata overlaps', () => {
  it('disjoint ranges pass, any one overlapping range is refused (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 100 }), { minLength: 2, maxLength: 40 }), fc.nat(), (lengths, pick) => {
        let at = 0;
        const ranges: MetadataRange[] = lengths.map((n, i) => {
          const r = { start: at, end: at + n, what: `r${i}`, at: i };
          at += n;
          return r;
        });
        checkNoOverlaps(ranges, at);
        const victim = ranges[pick % ranges.length];
        const overlapping = { start: victim.end - 1, end: victim.end + 1, what: 'bad', at: 999 };
        expect(() => checkNoOverlaps([...ranges, overlapping], at + 1)).toThrow(/overlaps/);
        expect(() => checkNoOverlaps(ranges, at - 1)).toThrow(/past the end/);
      }),
    );
  });
});
