
import { BlockError } from '../../errors.js';
import type { CreateBacking, FormatCreator } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { BlockMap } from './block-map.js';
import { blockMapBytes, encodeVdiHeader, randomUuid } from './header.js';
import { vdiFacts } from './facts.js';
import * as L from './limits.js';
import { parseOptions } from '../../options/zod-error.js';

/** The file system page a hole is punched in whole. */
const PAGE = 4096;

/** `qemu-img create -f vdi -o …` options (block/vdi.c vdi_create_opts; vdi has no subformat). */
export const vdiCreateSchema = vdiFacts.createSchema();

/**
 * A new, empty VDI image of `size` bytes (rounded up to whole sectors, as qemu-img does) on an
 * empty node: QEMU's layout (header, block map at 512, data after it). A static image's data
 * area is reserved as a hole at the end of the file.
 */
export async function createVdi(file: BlockNode, size: number, options: Record<string, unknown>, backing?: CreateBacking): Promise<number> {
  const o = parseOptions(vdiCreateSchema, options);
  if (backing) throw new BlockError('ENOTSUP', `vdi: images cannot have a backing file ('${backing.name}')`, { field: 'backing' });
  if (!Number.isSafeInteger(size) || size < 0) throw new BlockError('EINVAL', `size: ${size} is not a size in bytes`, { field: 'size' });
  const diskSize = Math.ceil(size / L.SECTOR_SIZE) * L.SECTOR_SIZE;
  if (diskSize > L.MAX_DISK_SIZE) throw new BlockError('ENOTSUP', `size: ${diskSize} is larger than the largest vdi image we open (${L.MAX_DISK_SIZE} bytes)`, { field: 'size' });
  const blocks = Math.ceil(diskSize / L.BLOCK_SIZE);
  const offsetData = L.HEADER_BYTES + blockMapBytes(blocks);
  const header = encodeVdiHeader({
    headerSize: L.MIN_HEADER_SIZE,
    imageType: o.static ? L.TYPE_STATIC : L.TYPE_DYNAMIC,
    imageFlags: 0,
    description: '',
    offsetBmap: L.HEADER_BYTES,
    offsetData,
    diskSize,
    blockSize: L.BLOCK_SIZE,
    blocksInImage: blocks,
    blocksAllocated: o.static ? blocks : 0,
    uuidImage: randomUuid(),
    uuidLastSnap: randomUuid(),
  });
  await file.write(0, header, true);
  if (blocks > 0) await file.write(L.HEADER_BYTES, BlockMap.fresh(blocks, o.static).bytes, true);
  if (o.static && blocks > 0) {
    // Grow the file over the data area, then make the tail that grew it a hole again (from a
    // page boundary, so that the file system frees it).
    const end = offsetData + blocks * L.BLOCK_SIZE;
    await file.write(end - L.SECTOR_SIZE, new Uint8Array(L.SECTOR_SIZE), true);
    const tail = Math.max(offsetData, Math.floor((end - L.SECTOR_SIZE) / PAGE) * PAGE);
    await file.writeZeroes(tail, end - tail);
  }
  await file.flush();
  return diskSize;
}

/** How the vdi driver creates images. */
export const vdiCreator: FormatCreator<BlockNode> = { schema: vdiCreateSchema, create: createVdi };
