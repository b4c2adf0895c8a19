import type * as z from 'zod';
import { BlockError } from '../../errors.js';
import type { CreateBacking, FormatCreator } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { parseOptions } from '../../options/zod-error.js';
import { dirName, isAbsolutePath, joinPath, readFileHead } from '../../platform/files.js';
import { locationOf } from '../qcow2/backing.js';
import { newCid } from './cid.js';
import { descriptorFor, newSparseHeader, newSparseLayout } from './create-layout.js';
import { descriptorText, parseDescriptor } from './descriptor.js';
import { hasSparseMagic, parseSparseHeader } from './header.js';
import { vmdkFacts } from './facts.js';
import * as L from './limits.js';

export { VMDK_SUBFORMATS } from './facts.js';

/** qemu-img create -f vmdk's `-o` options (size and backing_file/backing_fmt are given apart). */
export const vmdkCreateSchema = vmdkFacts.createSchema();

/** Where the new image is, for the extent line and to find a parent named relative to it. */
function imageName(file: BlockNode): string | undefined {
  const loc = locationOf(file);
  return loc?.kind === 'file' ? loc.name : undefined;
}

function baseName(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

/** The CID of the parent image (QEMU reads it to fill parentCID): its descriptor, in its first MiB. */
async function parentCid(file: BlockNode, backing: CreateBacking): Promise<number> {
  if (backing.format !== 'vmdk') throw new BlockError('EINVAL', `backing_fmt: must be 'vmdk' if present (got '${backing.format}')`, { field: 'backing_fmt' });
  const here = imageName(file);
  let name = backing.name;
  if (!isAbsolutePath(name)) {
    if (here === undefined) throw new BlockError('ENOTSUP', `vmdk: cannot find the parent '${name}' relative to an image that is not a local file`, { field: 'backing_file' });
    name = joinPath(dirName(here), name);
  }
  const head = await readFileHead(name, L.MAX_DESCRIPTOR_BYTES);
  let text: string;
  if (hasSparseMagic(head)) {
    const h = parseSparseHeader(head);
    const start = h.descriptorOffset * L.SECTOR;
    if (h.descriptorOffset === 0 || start >= head.length) throw new BlockError('ENOTSUP', `vmdk: the parent '${name}' has no descriptor in its first MiB`, { field: 'backing_file', path: name });
    text = descriptorText(head.subarray(start, Math.min(head.length, start + h.descriptorSize * L.SECTOR)));
  } else text = descriptorText(head);
  const cid = parseDescriptor(text).cid;
  if (cid === undefined) throw new BlockError('ECORRUPT', `vmdk: the parent '${name}' has no CID`, { field: 'backing_file', path: name });
  return cid;
}

/**
 * Lays out a new, empty sparse image on `file` as qemu-img does (header, embedded descriptor,
 * redundant and primary grain directories with every grain table made, grains from the next
 * 64 KiB): monolithicSparse and streamOptimized. The flat and twoGbMaxExtent subformats need
 * extent files beside the descriptor, which one `file` node cannot hold: ENOTSUP.
 */
async function create(file: BlockNode, size: number, input: Record<string, unknown>, backing?: CreateBacking): Promise<number> {
  const o = parseOptions(vmdkCreateSchema, input);
  if (o.subformat !== 'monolithicSparse' && o.subformat !== 'streamOptimized') {
    throw new BlockError('ENOTSUP', `subformat: ${o.subformat} needs extent files beside the descriptor; only monolithicSparse and streamOptimized are created on one file`, { field: 'subformat' });
  }
  if (o.compat6 && o.hwversion !== undefined) throw new BlockError('EINVAL', 'compat6: cannot be enabled with hwversion set', { field: 'compat6' });
  if (!Number.isSafeInteger(size) || size < 0) throw new BlockError('EINVAL', `size: ${size} is not a size in bytes`, { field: 'size' });
  const capacity = Math.ceil(size / L.SECTOR);
  const layout = newSparseLayout(capacity);
  if (layout.gtCount > L.MAX_GD_ENTRIES) throw new BlockError('EINVAL', `size: ${size} bytes need more than ${L.MAX_GD_ENTRIES} grain tables`, { field: 'size' });
  const compressed = o.subformat === 'streamOptimized';
  const descriptor = descriptorFor({
    cid: newCid(),
    parentCid: backing ? await parentCid(file, backing) : 0xffffffff,
    createType: o.subformat,
    parentFileNameHint: backing?.name,
    extents: [`RW ${capacity} SPARSE "${baseName(imageName(file) ?? 'disk.vmdk')}"`],
    hwVersion: o.hwversion ?? (o.compat6 ? '6' : '4'),
    adapterType: o.adapter_type,
    toolsVersion: o.toolsversion,
    size: capacity * L.SECTOR,
  });
  const text = new TextEncoder().encode(descriptor);
  if (text.length > L.EMBEDDED_DESCRIPTOR_BYTES) throw new BlockError('EINVAL', `backing_file: the descriptor would be ${text.length} bytes, more than the ${L.EMBEDDED_DESCRIPTOR_BYTES} it has room for`, { field: 'backing_file' });
  await file.write(0, newSparseHeader(layout, { compressed, zeroedGrain: o.zeroed_grain }), true);
  const area = new Uint8Array(L.EMBEDDED_DESCRIPTOR_BYTES);
  area.set(text);
  await file.write(L.SECTOR, area, true);
  await writeDirectory(file, layout.rgdOffset, layout.rgdOffset + layout.gdSectors, layout.gtSectors, layout.gtCount);
  await writeDirectory(file, layout.gdOffset, layout.gdOffset + layout.gdSectors, layout.gtSectors, layout.gtCount);
  // The grain tables are all zeros: the file only has to reach the first grain (a hole where it can be).
  await file.write(layout.grainOffset * L.SECTOR - L.SECTOR, new Uint8Array(L.SECTOR), true);
  await file.flush();
  return capacity * L.SECTOR;
}

/** A directory at sector `at` naming `count` consecutive grain tables from sector `first`, written a chunk at a time. */
async function writeDirectory(file: BlockNode, at: number, first: number, gtSectors: number, count: number): Promise<void> {
  const chunk = 65536;
  for (let i = 0; i < count; i += chunk) {
    const n = Math.min(chunk, count - i);
    const b = new Uint8Array(Math.ceil((n * 4) / L.SECTOR) * L.SECTOR);
    const v = new DataView(b.buffer);
    for (let k = 0; k < n; k++) v.setUint32(k * 4, first + (i + k) * gtSectors, true);
    await file.write(at * L.SECTOR + i * 4, b, true);
  }
}

/** The vmdk driver's creator (qemu-img create -f vmdk). */
export const vmdkCreator: FormatCreator<BlockNode> = { schema: vmdkCreateSchema as unknown as z.ZodType<Record<string, unknown>>, create };
