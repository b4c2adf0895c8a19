import type * as z from 'zod';
import { BlockError } from '../../errors.js';
import type { CreateBacking, FormatCreator } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { parseOptions } from '../../options/zod-error.js';
import { encodeDynamicHeader } from './dynamic-header.js';
import { encodeFooter } from './footer.js';
import { createGeometry } from './geometry.js';
import { vpcFacts } from './facts.js';
import * as L from './limits.js';

/** qemu-img create -f vpc's `-o` options. */
export const vpcCreateSchema = vpcFacts.createSchema();

/** The bytes of a new image's footer: QEMU's fields (creator 'qemu', or 'qem2' when the size is forced). */
function newFooter(diskType: number, size: number, g: { cylinders: number; heads: number; sectorsPerTrack: number }, forced: boolean): Uint8Array {
  const uuid = new Uint8Array(16);
  globalThis.crypto.getRandomValues(uuid);
  return encodeFooter({
    features: 2,
    version: 0x00010000,
    dataOffset: diskType === L.DISK_FIXED ? -1 : L.FOOTER_SIZE,
    timestamp: Math.max(0, Math.floor(Date.now() / 1000) - L.VHD_EPOCH) >>> 0,
    creatorApp: forced ? 'qem2' : 'qemu',
    creatorVersion: 0x00050003,
    creatorOs: 'Wi2k',
    originalSize: size,
    currentSize: size,
    cylinders: g.cylinders,
    heads: g.heads,
    sectorsPerTrack: g.sectorsPerTrack,
    diskType,
    uuid,
    savedState: 0,
  });
}

/**
 * Lays out a new VHD as qemu-img create does (QEMU vpc_co_create): the size rounded up to a CHS
 * geometry unless forced; a fixed image is the disk then the footer, a dynamic one the footer
 * copy, the dynamic header at 512, the BAT (2 MiB blocks, all unallocated) at 1536, the footer.
 */
async function createVpc(file: BlockNode, size: number, options: Record<string, unknown>, backing?: CreateBacking): Promise<number> {
  const o = parseOptions(vpcCreateSchema, options);
  if (backing) throw new BlockError('ENOTSUP', 'vpc: qemu-img cannot create differencing VHDs, nor can we (backing files are read, not created)', { field: 'backing' });
  if (!Number.isSafeInteger(size) || size < 0) throw new BlockError('EINVAL', `size: ${size} is not a size in bytes`, { field: 'size' });
  // qemu-img rounds the size up to whole sectors before the format sees it.
  const g = createGeometry(Math.ceil(size / L.SECTOR_SIZE) * L.SECTOR_SIZE, o.force_size);
  const total = g.sectors * L.SECTOR_SIZE;
  if (o.subformat === 'fixed') {
    await file.write(total, newFooter(L.DISK_FIXED, total, g, o.force_size), true);
    await file.flush();
    return total;
  }
  const entries = Math.ceil(g.sectors / (L.DEFAULT_BLOCK_SIZE / L.SECTOR_SIZE));
  const tableOffset = 3 * L.SECTOR_SIZE;
  const batBytes = Math.ceil((entries * 4) / L.SECTOR_SIZE) * L.SECTOR_SIZE;
  const footer = newFooter(L.DISK_DYNAMIC, total, g, o.force_size);
  const head = new Uint8Array(tableOffset + batBytes + L.FOOTER_SIZE);
  head.set(footer, 0);
  head.set(encodeDynamicHeader(tableOffset, entries, L.DEFAULT_BLOCK_SIZE), L.FOOTER_SIZE);
  head.fill(0xff, tableOffset, tableOffset + batBytes);
  head.set(footer, tableOffset + batBytes);
  await file.write(0, head, true);
  await file.flush();
  return total;
}

/** The vpc driver's {@link FormatCreator}. */
export const vpcCreator: FormatCreator<BlockNode> = { schema: vpcCreateSchema as unknown as z.ZodType<Record<string, unknown>>, create: createVpc };
