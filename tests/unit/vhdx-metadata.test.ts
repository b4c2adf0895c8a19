import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parentLocatorItem } from '../../src/drivers/vhdx/create.js';
import { guidBytes } from '../../src/drivers/vhdx/guid.js';
import * as L from '../../src/drivers/vhdx/limits.js';
import { parseMetadataTable, parseParentLocator, readMetadata } from '../../src/drivers/vhdx/metadata.js';
import { parentCandidates, sameLinkage } from '../../src/drivers/vhdx/parent.js';

const region = { name: 'metadata region', start: 3 << 20, end: 4 << 20 };

/** A metadata region (its first 64 KiB table and items) with the five required items. */
function metadataRegion(o: { blockSize?: number; lss?: number; pss?: number; size?: bigint; bits?: number; extra?: [string, number, number, number][] } = {}) {
  const b = new Uint8Array(1 << 20);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode('metadata'), 0);
  const items: [string, number, number, number][] = [
    [L.FILE_PARAMETERS_GUID, 65536, 8, 4],
    [L.VIRTUAL_DISK_SIZE_GUID, 65536 + 8, 8, 6],
    [L.PAGE83_GUID, 65536 + 16, 16, 6],
    [L.LOGICAL_SECTOR_SIZE_GUID, 65536 + 32, 4, 6],
    [L.PHYSICAL_SECTOR_SIZE_GUID, 65536 + 36, 4, 6],
    ...(o.extra ?? []),
  ];
  v.setUint16(10, items.length, true);
  items.forEach(([g, off, len, flags], i) => {
    b.set(guidBytes(g), 32 + i * 32);
    v.setUint32(32 + i * 32 + 16, off, true);
    v.setUint32(32 + i * 32 + 20, len, true);
    v.setUint32(32 + i * 32 + 24, flags, true);
  });
  v.setUint32(65536, o.blockSize ?? 1 << 20, true);
  v.setUint32(65540, o.bits ?? 0, true);
  v.setBigUint64(65544, o.size ?? 16n << 20n, true);
  v.setUint32(65568, o.lss ?? 512, true);
  v.setUint32(65572, o.pss ?? 4096, true);
  const read = async (offset: number, length: number) => b.slice(offset - region.start, offset - region.start + length);
  return { table: b.subarray(0, 65536), read };
}

const parse = (o: Parameters<typeof metadataRegion>[0]) => {
  const m = metadataRegion(o);
  return readMetadata(m.table, region, m.read, 'n');
};

describe('vhdx: metadata', () => {
  it('reads the five required items', async () => {
    expect(await parse({})).toMatchObject({ blockSize: 1 << 20, virtualSize: 16 << 20, logicalSectorSize: 512, physicalSectorSize: 4096, hasParent: false, leaveBlocksAllocated: false });
    expect(await parse({ bits: 1 })).toMatchObject({ leaveBlocksAllocated: true });
  });

  it('refuses out-of-range fields, naming them', async () => {
    await expect(parse({ blockSize: 3 << 20 })).rejects.toMatchObject({ code: 'ECORRUPT', field: 'block_size' });
    await expect(parse({ blockSize: 512 << 20 })).rejects.toMatchObject({ code: 'ECORRUPT', field: 'block_size' });
    await expect(parse({ lss: 1024 })).rejects.toMatchObject({ code: 'ECORRUPT', field: 'logical_sector_size' });
    await expect(parse({ pss: 0 })).rejects.toMatchObject({ code: 'ECORRUPT', field: 'physical_sector_size' });
    await expect(parse({ size: 1n << 60n })).rejects.toMatchObject({ code: 'ECORRUPT', field: 'virtual_disk_size' });
    await expect(parse({ size: 1000n })).rejects.toMatchObject({ code: 'ECORRUPT', field: 'virtual_disk_size' });
    await expect(parse({ bits: 2 })).rejects.toMatchObject({ code: 'ECORRUPT', field: 'has_parent' });
  });

  it('refuses an unknown required item and a duplicated one; skips an unknown optional one', async () => {
    await expect(parse({ extra: [['01234567-89AB-CDEF-0123-456789ABCDEF', 65536 + 64, 8, 4]] })).rejects.toMatchObject({ code: 'ENOTSUP' });
    await expect(parse({ extra: [[L.PAGE83_GUID, 65536 + 64, 16, 6]] })).rejects.toMatchObject({ code: 'ECORRUPT', field: 'item_id' });
    expect((await parse({ extra: [['01234567-89AB-CDEF-0123-456789ABCDEF', 65536 + 64, 8, 0]] })).blockSize).toBe(1 << 20);
  });

  it('any item offset and length outside the region or the limits is refused before it is read', () => {
    fc.assert(
      fc.property(fc.nat(), fc.nat(), (offset, length) => {
        const m = metadataRegion();
        const v = new DataView(m.table.buffer);
        v.setUint32(32 + 16, offset, true);
        v.setUint32(32 + 20, length, true);
        const inside = offset >= 65536 && length >= 8 && length <= 1 << 20 && offset + length <= 1 << 20;
        try {
          parseMetadataTable(m.table, region, 'n');
          return inside;
        } catch (e) {
          return !inside && (e as { code?: string }).code === 'ECORRUPT';
        }
      }),
    );
  });
});

describe('vhdx: parent locator', () => {
  it('key/value pairs survive a write and a read', () => {
    const entries = { parent_linkage: '{0B6A6C5E-1111-4222-8333-444455556666}', relative_path: '.\\base.vhdx', absolute_win32_path: '/tmp/x/base.vhdx' };
    expect(parseParentLocator(parentLocatorItem(entries), 0, 'n')).toEqual({ type: L.PARENT_VHDX_GUID, entries });
  });

  it('an entry pointing outside the item is refused', () => {
    const item = parentLocatorItem({ relative_path: 'a' });
    new DataView(item.buffer).setUint32(20 + 4, 10_000, true);
    expect(() => parseParentLocator(item, 0, 'n')).toThrow(expect.objectContaining({ code: 'ECORRUPT', field: 'parent_locator' }));
  });

  it('paths: relative_path against the image directory first, then an absolute path', () => {
    expect(parentCandidates({ relative_path: '.\\sub\\base.vhdx', absolute_win32_path: '/data/base.vhdx' }, '/images')).toEqual(['/images/sub/base.vhdx', '/data/base.vhdx']);
    expect(parentCandidates({ absolute_win32_path: 'C:\\disks\\base.vhdx' }, '/images')).toEqual([]);
    expect(sameLinkage('{ABCDEF01-0000-0000-0000-000000000000}', 'abcdef01-0000-0000-0000-000000000000')).toBe(true);
  });
});
