// Pure parts of the vpc driver: geometry as qemu-img computes it (values recorded from qemu-img
// 7.2 create), footer and dynamic header checksums and refusals, BAT checks, sector bitmaps.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { BlockError } from '../../src/errors.js';
import { allSet, bitSet, parseBat, runLength, setBits } from '../../src/drivers/vpc/bat.js';
import { encodeDynamicHeader, parseDynamicHeader } from '../../src/drivers/vpc/dynamic-header.js';
import { encodeFooter, parseFooter, vhdChecksum } from '../../src/drivers/vpc/footer.js';
import { calculateGeometry, chsSectors, createGeometry, virtualSectors } from '../../src/drivers/vpc/geometry.js';
import { parentNames } from '../../src/drivers/vpc/parent.js';
import { vpcDriver } from '../../src/drivers/vpc/index.js';

function thrown(f: () => unknown): BlockError {
  try {
    f();
  } catch (e) {
    return e as BlockError;
  }
  throw new Error('expected a throw');
}

const footerFields = {
  features: 2,
  version: 0x10000,
  dataOffset: 512,
  timestamp: 1,
  creatorApp: 'qemu',
  creatorVersion: 0x50003,
  creatorOs: 'Wi2k',
  originalSize: 10514432,
  currentSize: 10514432,
  cylinders: 302,
  heads: 4,
  sectorsPerTrack: 17,
  diskType: 3,
  uuid: new Uint8Array(16).fill(9),
  savedState: 0,
};

describe('vpc geometry', () => {
  // size asked → [virtual size, C, H, S] as qemu-img create -f vpc made them
  const recorded: [number, number, number, number, number][] = [
    [512, 34816, 1, 4, 17],
    [1000000, 1009664, 0x1d, 4, 17],
    [2 ** 20, 1079296, 0x1f, 4, 17],
    [33 * 2 ** 20, 34607104, 0x3e2, 4, 17],
    [100 * 2 ** 20, 104865792, 0x3ec, 12, 17],
    [504 * 2 ** 20, 528482304, 0x400, 16, 63],
    [2 ** 30, 1073995776, 0x821, 16, 63],
    [4 * 2 ** 30, 4295467008, 0x2083, 16, 63],
    [31 * 2 ** 30, 33286127616, 0xfbf0, 16, 63],
    [127 * 2 ** 30, 136365219840, 0xfeff, 16, 255],
    [200 * 2 ** 30, 200 * 2 ** 30, 0xffff, 16, 255],
    [2040 * 2 ** 30, 2040 * 2 ** 30, 0xffff, 16, 255],
  ];
  it.each(recorded)('size %d gets %d bytes, as qemu-img create', (size, virtual, c, h, s) => {
    const g = createGeometry(size, false);
    expect(g.sectors * 512).toBe(virtual);
    expect([g.cylinders, g.heads, g.sectorsPerTrack]).toEqual([c, h, s]);
  });

  it('force_size keeps the size and takes the maximal geometry; beyond 2040 GiB is EFBIG', () => {
    expect(createGeometry(2 ** 30, true)).toMatchObject({ sectors: 2 ** 21, cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
    expect(thrown(() => createGeometry(2041 * 2 ** 30, false)).code).toBe('EFBIG');
  });

  it('the geometry never holds less than asked, and grows with the size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2040 * 2 ** 21 }), fc.integer({ min: 0, max: 5000 }), (sectors, more) => {
        const a = createGeometry(sectors * 512, false).sectors;
        expect(a).toBeGreaterThanOrEqual(sectors);
        expect(createGeometry(Math.min(sectors + more, 2040 * 2 ** 21) * 512, false).sectors).toBeGreaterThanOrEqual(a);
      }),
      { numRuns: 300 },
    );
  });

  it('calculateGeometry stays within CHS limits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 33 }), (sectors) => {
        const g = calculateGeometry(sectors);
        expect(g.heads).toBeLessThanOrEqual(16);
        expect(g.cylinders).toBeLessThanOrEqual(65535);
        expect(chsSectors(g)).toBeLessThanOrEqual(Math.max(sectors, 0));
      }),
    );
  });

  it('the reported size follows the creator: CHS for qemu/vpc, current_size for qem2/win/d2v/tap, unless forced', () => {
    const f = parseFooter(encodeFooter({ ...footerFields, currentSize: 10485760 }), 0);
    expect(virtualSectors(f) * 512).toBe(10514432);
    expect(virtualSectors(f, 'current_size') * 512).toBe(10485760);
    for (const app of ['qem2', 'win ', 'd2v ', 'tap\0', 'CTXS']) {
      const g = parseFooter(encodeFooter({ ...footerFields, creatorApp: app, currentSize: 10485760 }), 0);
      expect(virtualSectors(g) * 512).toBe(10485760);
      expect(virtualSectors(g, 'chs') * 512).toBe(10514432);
    }
    const huge = parseFooter(encodeFooter({ ...footerFields, creatorApp: 'win ', currentSize: 2041 * 2 ** 30 }), 0);
    expect(thrown(() => virtualSectors(huge)).code).toBe('EFBIG');
  });
});

describe('vpc footer and dynamic header', () => {
  it('round-trips a footer; a changed byte fails the checksum (QEMU 7.2 refuses it too)', () => {
    const b = encodeFooter(footerFields);
    expect(parseFooter(b, 0)).toMatchObject({ ...footerFields, uuid: footerFields.uuid });
    b[40] ^= 1;
    const e = thrown(() => parseFooter(b, 4096));
    expect([e.code, e.field, e.offset]).toEqual(['ECORRUPT', 'checksum', 4096 + 64]);
  });

  it('the checksum is the one’s complement of the byte sum without its field', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 512, maxLength: 512 }), (b) => {
        let sum = 0;
        for (let i = 0; i < 512; i++) if (i < 64 || i >= 68) sum += b[i];
        expect(vhdChecksum(b, 64)).toBe(~sum >>> 0);
      }),
      { numRuns: 50 },
    );
  });

  it('refuses a missing cookie and an unknown disk type', () => {
    expect(thrown(() => parseFooter(new Uint8Array(512), 0)).field).toBe('cookie');
    const e = thrown(() => parseFooter(encodeFooter({ ...footerFields, diskType: 7 }), 0));
    expect([e.code, e.field]).toEqual(['ENOTSUP', 'disk_type']);
  });

  const header = (tableOffset: number, entries: number, blockSize: number, patch?: (v: DataView) => void) => {
    const b = encodeDynamicHeader(tableOffset, entries, blockSize);
    if (patch) {
      const v = new DataView(b.buffer);
      patch(v);
      v.setUint32(36, vhdChecksum(b, 36));
    }
    return b;
  };

  it('parses a dynamic header and refuses bad checksum, block size, BAT bounds and locators, naming the field', () => {
    expect(parseDynamicHeader(header(1536, 6, 2 ** 21), 512, 4096)).toMatchObject({ tableOffset: 1536, maxTableEntries: 6, blockSize: 2 ** 21, bitmapSize: 512 });
    const bad = header(1536, 6, 2 ** 21);
    bad[100] = 1;
    const cases: [Uint8Array, string, string][] = [
      [bad, 'ECORRUPT', 'checksum'],
      [header(1536, 6, 3000), 'ECORRUPT', 'block_size'],
      [header(1536, 6, 256), 'ECORRUPT', 'block_size'],
      [header(1536, 0xffffffff, 2 ** 21), 'ENOTSUP', 'max_table_entries'],
      [header(1536, 1000, 2 ** 21), 'ECORRUPT', 'table_offset'],
      [header(2 ** 40, 6, 2 ** 21), 'ECORRUPT', 'table_offset'],
      [header(600, 6, 2 ** 21), 'ECORRUPT', 'table_offset'],
      [header(100, 6, 2 ** 21), 'ECORRUPT', 'table_offset'],
      [header(1536, 6, 2 ** 21, (v) => {
          v.setUint32(576, 0x57327275);
          v.setUint32(584, 1 << 20);
        }), 'ECORRUPT', 'parent_locator.data_length'],
      [header(1536, 6, 2 ** 21, (v) => {
          v.setUint32(576, 0x57327275);
          v.setUint32(584, 20);
          v.setBigUint64(592, 4090n);
        }), 'ECORRUPT', 'parent_locator.data_offset'],
    ];
    for (const [b, code, field] of cases) {
      const e = thrown(() => parseDynamicHeader(b, 512, 4096));
      expect([e.code, e.field]).toEqual([code, field]);
    }
  });

  it('orders parent names: W2ru, W2ku, MacX, then the header name (its last component)', () => {
    const h = parseDynamicHeader(
      header(1536, 6, 2 ** 21, (v) => {
        v.setUint32(576, 0x4d616358); // MacX
        v.setUint32(576 + 24, 0x57326b75); // W2ku
        v.setUint32(576 + 48, 0x57327275); // W2ru
        const name = 'C:\\x\\p.vhd';
        for (let i = 0; i < name.length; i++) v.setUint16(64 + 2 * i, name.charCodeAt(i));
      }),
      512,
      4096,
    );
    const utf16 = (s: string) => new Uint8Array(Buffer.from(s, 'utf16le'));
    const names = parentNames(
      h,
      new Map([
        [0, new Uint8Array(Buffer.from('file://localhost/a%20b/p.vhd'))],
        [1, utf16('C:\\x\\p.vhd')],
        [2, utf16('.\\p.vhd')],
      ]),
    );
    expect(names.map((n) => n.name)).toEqual(['./p.vhd', 'C:/x/p.vhd', '/a b/p.vhd', 'p.vhd']);
  });
});

describe('vpc BAT and sector bitmaps', () => {
  const regions = { headerOffset: 512, tableOffset: 1536, blockSize: 4096, bitmapSize: 512, fileSize: 64 * 1024 };
  const bat = (...entries: number[]) => {
    const b = new Uint8Array(entries.length * 4);
    for (const [i, e] of entries.entries()) new DataView(b.buffer).setUint32(i * 4, e);
    return b;
  };

  it('finds the first free offset: past the BAT and the blocks, and never before the footer at the end', () => {
    expect(parseBat(bat(0xffffffff, 0xffffffff), { ...regions, fileSize: 2048 + 512 }).freeOffset).toBe(2048);
    expect(parseBat(bat(8, 0xffffffff, 30), { ...regions, fileSize: 30 * 512 + 4608 }).freeOffset).toBe(30 * 512 + 4608);
    expect(parseBat(bat(8, 0xffffffff), regions).freeOffset).toBe(64 * 1024 - 512);
  });

  it('refuses blocks past the end, over the metadata or over each other, naming the entry offset', () => {
    const cases: [Uint8Array, number][] = [
      [bat(0xffffffff, 200), 1540],
      [bat(1), 1536],
      [bat(3), 1536],
      [bat(8, 10), 1540],
      [bat(20, 0xffffffff, 12), 1536],
    ];
    for (const [b, offset] of cases) {
      const e = thrown(() => parseBat(b, regions));
      expect([e.code, e.field, e.offset]).toEqual(['ECORRUPT', 'bat', offset]);
    }
  });

  it('runs and bits agree with a bit-by-bit model (most significant bit first)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(511), fc.nat(64)), { maxLength: 8 }), fc.nat(511), (sets, from) => {
        const bitmap = new Uint8Array(64);
        const model = new Array<boolean>(512).fill(false);
        for (const [s, n] of sets) {
          setBits(bitmap, s, Math.min(512, s + n));
          for (let i = s; i < Math.min(512, s + n); i++) model[i] = true;
        }
        for (let i = 0; i < 512; i++) expect(bitSet(bitmap, i)).toBe(model[i]);
        let run = 1;
        while (from + run < 512 && model[from + run] === model[from]) run++;
        expect(runLength(bitmap, from, 512)).toBe(run);
        expect(allSet(bitmap, from, 512)).toBe(model.slice(from).every(Boolean));
      }),
    );
    const b = new Uint8Array(1);
    setBits(b, 0, 1);
    expect(b[0]).toBe(0x80);
  });
});

describe('vpc probe', () => {
  it("scores 100 exactly when the head starts with the footer cookie 'conectix', 0 for anything else", () => {
    const cookie = new TextEncoder().encode('conectix');
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, withCookie) => {
        const head = withCookie ? new Uint8Array([...cookie, ...bytes]) : bytes;
        const starts = head.length >= 8 && cookie.every((c, i) => head[i] === c);
        expect(vpcDriver.probe!(head)).toBe(starts ? 100 : 0);
      }),
    );
    expect(vpcDriver.probe!(cookie.subarray(0, 7))).toBe(0);
  });
});
