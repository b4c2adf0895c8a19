import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockMap, checkBlockMap } from '../../src/drivers/vdi/block-map.js';
import { blockMapBytes, encodeVdiHeader, hasVdiSignature, parseVdiHeader, randomUuid, uuidText, type VdiHeader, virtualSize } from '../../src/drivers/vdi/header.js';
import * as L from '../../src/drivers/vdi/limits.js';
import { BlockError } from '../../src/errors.js';

const MiB = 2 ** 20;

/** A header as QEMU's vdi_create lays one out for `diskSize` bytes. */
function header(diskSize: number, staticImage = false): VdiHeader {
  const blocks = Math.ceil(diskSize / MiB);
  return {
    headerSize: 0x180,
    imageType: staticImage ? L.TYPE_STATIC : L.TYPE_DYNAMIC,
    imageFlags: 0,
    description: '',
    offsetBmap: 512,
    offsetData: 512 + blockMapBytes(blocks),
    diskSize,
    blockSize: MiB,
    blocksInImage: blocks,
    blocksAllocated: staticImage ? blocks : 0,
    uuidImage: randomUuid(),
    uuidLastSnap: randomUuid(),
  };
}
const fileEnd = (h: VdiHeader) => h.offsetData + h.blocksInImage * MiB;

/** The header bytes with a field changed (little endian). */
function patched(h: VdiHeader, at: number, value: number, bytes: 4 | 8 = 4): Uint8Array {
  const b = encodeVdiHeader(h);
  const v = new DataView(b.buffer);
  if (bytes === 4) v.setUint32(at, value >>> 0, true);
  else v.setBigUint64(at, BigInt(value), true);
  return b;
}

/** The BlockError parsing `bytes` throws, with its code, field and offset. */
function refusal(bytes: Uint8Array, fileLength: number): BlockError {
  try {
    parseVdiHeader(bytes, fileLength);
  } catch (e) {
    expect(e).toBeInstanceOf(BlockError);
    return e as BlockError;
  }
  throw new Error('expected the header to be refused');
}

describe('vdi header', () => {
  it('round-trips every field QEMU writes, for any size up to the limit', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: L.MAX_DISK_SIZE }), fc.boolean(), (size, st) => {
        const h = header(size, st);
        const back = parseVdiHeader(encodeVdiHeader(h), fileEnd(h));
        expect(back).toEqual({ ...h, uuidImage: h.uuidImage, uuidLastSnap: h.uuidLastSnap });
        expect(virtualSize(back)).toBe(Math.ceil(size / 512) * 512);
      }),
    );
  });

  it('writes the signature, version and sector size where QEMU reads them', () => {
    const b = encodeVdiHeader(header(5 * MiB));
    const v = new DataView(b.buffer);
    expect(v.getUint32(0x40, true)).toBe(0xbeda107f);
    expect(v.getUint32(0x44, true)).toBe(0x00010001);
    expect(v.getUint32(0x168, true)).toBe(512);
    expect(new TextDecoder().decode(b.subarray(0, 35))).toBe('<<< QEMU VM Virtual Disk Image >>>\n');
  });

  it('probes only a whole header with the signature at 0x40', () => {
    const b = encodeVdiHeader(header(MiB));
    expect(hasVdiSignature(b)).toBe(true);
    expect(hasVdiSignature(b.subarray(0, 511))).toBe(false);
    expect(hasVdiSignature(new Uint8Array(512))).toBe(false);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 512, maxLength: 512 }), (raw) => {
        const sig = new DataView(raw.buffer).getUint32(0x40, true) === L.VDI_SIGNATURE;
        expect(hasVdiSignature(raw)).toBe(sig);
      }),
    );
  });

  it('shows UUIDs in RFC 4122 order (the first three groups byte-swapped) as version 4', () => {
    const u = Uint8Array.from([0x04, 0x03, 0x02, 0x01, 0x06, 0x05, 0x08, 0x07, 9, 10, 11, 12, 13, 14, 15, 16]);
    expect(uuidText(u)).toBe('01020304-0506-0708-090a-0b0c0d0e0f10');
    expect(uuidText(randomUuid())).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  const h = header(8 * MiB);
  const end = fileEnd(h);
  const cases: [string, Uint8Array, number, string, string][] = [
    ['a bad signature', patched(h, 0x40, 0x12345678), end, 'ECORRUPT', 'signature'],
    ['version 1.0', patched(h, 0x44, 0x00010000), end, 'ENOTSUP', 'version'],
    ['a diff image', patched(h, 0x4c, 4), end, 'ENOTSUP', 'image_type'],
    ['4 KiB sectors', patched(h, 0x168, 4096), end, 'ENOTSUP', 'sector_size'],
    ['2 MiB blocks', patched(h, 0x178, 2 * MiB), end, 'ENOTSUP', 'block_size'],
    ['more blocks than the limit', patched(h, 0x180, L.MAX_BLOCKS + 1), end, 'ENOTSUP', 'blocks_in_image'],
    ['an absurd disk size', patched(h, 0x170, 2 ** 62, 8), end, 'ENOTSUP', 'disk_size'],
    ['a disk larger than its blocks', patched(h, 0x170, 9 * MiB, 8), end, 'ECORRUPT', 'disk_size'],
    ['more blocks allocated than exist', patched(h, 0x184, 9), end, 'ECORRUPT', 'blocks_allocated'],
    ['an unaligned block map', patched(h, 0x154, 513), end, 'ENOTSUP', 'offset_bmap'],
    ['a block map inside the header', patched(h, 0x154, 0), end, 'ECORRUPT', 'offset_bmap'],
    ['data over the block map', patched(h, 0x158, 512), end, 'ECORRUPT', 'offset_data'],
    ['a header size too small', patched(h, 0x48, 0x100), end, 'ECORRUPT', 'header_size'],
    ['a block map past the end of the file', patched({ ...h, offsetData: 1025 * MiB }, 0x154, 1024 * MiB), end, 'ECORRUPT', 'offset_bmap'],
    ['a truncated block map', encodeVdiHeader(h), 600, 'ECORRUPT', 'offset_bmap'],
    ['a linked image', patched(h, 0x1a8, 1), end, 'ENOTSUP', 'uuid_link'],
    ['a differencing image', patched(h, 0x1b8, 1), end, 'ENOTSUP', 'uuid_parent'],
  ];
  for (const [what, bytes, len, code, field] of cases) {
    it(`refuses ${what}: ${code} naming ${field}`, () => {
      const e = refusal(bytes, len);
      expect(e.code).toBe(code);
      expect(e.field).toBe(field);
      expect(e.message).toContain(field);
      expect(typeof e.offset).toBe('number');
    });
  }

  it('refuses a file shorter than a header', () => {
    const e = refusal(encodeVdiHeader(h).subarray(0, 100), 100);
    expect(e.code).toBe('ECORRUPT');
  });

  it('never throws anything but a BlockError on random bytes, and accepts only what re-encodes the same', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 512, maxLength: 512 }), fc.nat({ max: 2 ** 40 }), fc.boolean(), (raw, len, sig) => {
        if (sig) new DataView(raw.buffer).setUint32(0x40, L.VDI_SIGNATURE, true);
        try {
          const p = parseVdiHeader(raw, len);
          expect(p.blocksInImage).toBeLessThanOrEqual(L.MAX_BLOCKS);
          expect(p.offsetBmap + p.blocksInImage * 4).toBeLessThanOrEqual(len);
        } catch (e) {
          expect(e).toBeInstanceOf(BlockError);
        }
      }),
    );
  });
});

describe('vdi block map', () => {
  const h = header(4 * MiB);
  const mapOf = (...entries: number[]) => {
    const m = BlockMap.fresh(h.blocksInImage, false);
    for (const [b, e] of entries.entries()) m.set(b, e);
    return m;
  };
  const end = fileEnd(h);

  it('a fresh map: all unallocated (dynamic) or each block its own (static)', () => {
    const d = BlockMap.fresh(3, false);
    const s = BlockMap.fresh(3, true);
    expect([0, 1, 2].map((b) => d.get(b))).toEqual([L.BLOCK_UNALLOCATED, L.BLOCK_UNALLOCATED, L.BLOCK_UNALLOCATED]);
    expect([0, 1, 2].map((b) => s.get(b))).toEqual([0, 1, 2]);
    expect(d.bytes.length).toBe(512);
  });

  it('counts allocated entries and allocates after the highest one and the header count', () => {
    expect(checkBlockMap(mapOf(1, L.BLOCK_ZERO, 0, L.BLOCK_UNALLOCATED), { ...h, blocksAllocated: 2 }, end)).toEqual({ allocated: 2, nextIndex: 2 });
    // A gap (a crash between the header and the map): never reuse index 3.
    expect(checkBlockMap(mapOf(3), { ...h, blocksAllocated: 1 }, end)).toEqual({ allocated: 1, nextIndex: 4 });
  });

  it('refuses an entry past blocks_in_image, a block used twice, a block past the end of the file', () => {
    const codes = [
      () => checkBlockMap(mapOf(4), h, end),
      () => checkBlockMap(mapOf(0, 1, 0), h, end),
      () => checkBlockMap(mapOf(0, 3), h, end - 1),
    ].map((f) => {
      try {
        f();
      } catch (e) {
        return [(e as BlockError).code, (e as BlockError).field, (e as BlockError).offset];
      }
      return 'accepted';
    });
    expect(codes).toEqual([
      ['ECORRUPT', 'block_map', 512],
      ['ECORRUPT', 'block_map', 520],
      ['ECORRUPT', 'block_map', 516],
    ]);
  });
});
