import type * as z from 'zod';
import { BlockError } from '../../errors.js';
import type { CreateBacking, CreateSiblings, FormatCreator } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { parseOptions } from '../../options/zod-error.js';
import { dirName, isAbsolutePath, joinPath, readFileHead } from '../../platform/files.js';
import { locationOf } from '../qcow2/backing.js';
import { newCid } from './cid.js';
import { descriptorFor, newSparseLayout } from './create-layout.js';
import { writeSparseExtent } from './create-extent.js';
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
  let name = backing.path ?? backing.name;
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

/** Where each extent of a split or flat disk goes, and its descriptor line (QEMU vmdk_co_do_create). */
interface ExtentPlan {
  name: string;
  sectors: number;
  line: string;
}

/** qemu-img's split size: every extent of a twoGbMaxExtent disk but the last holds 2 GiB. */
const SPLIT_BYTES = 2 ** 31;

/**
 * The extent files of a flat or split disk, named as qemu-img names them from the image's base
 * name (`disk.vmdk` → `disk-flat.vmdk`, `disk-s001.vmdk`, `disk-f001.vmdk`, …).
 */
export function extentPlans(imageBase: string, bytes: number, flat: boolean, split: boolean): ExtentPlan[] {
  const dot = imageBase.lastIndexOf('.');
  const prefix = dot < 0 ? imageBase : imageBase.slice(0, dot);
  const postfix = dot < 0 ? '' : imageBase.slice(dot);
  const plans: ExtentPlan[] = [];
  for (let done = 0, i = 1; done < bytes; i++) {
    const n = Math.min(bytes - done, split ? SPLIT_BYTES : bytes);
    const name = split ? `${prefix}-${flat ? 'f' : 's'}${String(i).padStart(3, '0')}${postfix}` : `${prefix}-flat${postfix}`;
    const sectors = n / L.SECTOR;
    plans.push({ name, sectors, line: flat ? `RW ${sectors} FLAT "${name}" 0` : `RW ${sectors} SPARSE "${name}"` });
    done += n;
    if (plans.length > L.MAX_EXTENTS) break;
  }
  return plans;
}

/**
 * Lays out a new, empty image as qemu-img does. monolithicSparse and streamOptimized: one sparse
 * file with its descriptor inside. monolithicFlat, twoGbMaxExtentSparse/Flat: a descriptor file
 * and extent files beside it, made through `siblings` (ENOTSUP without them).
 */
async function create(file: BlockNode, size: number, input: Record<string, unknown>, backing?: CreateBacking, siblings?: CreateSiblings<BlockNode>): Promise<number> {
  const o = parseOptions(vmdkCreateSchema, input);
  if (o.compat6 && o.hwversion !== undefined) throw new BlockError('EINVAL', 'compat6: cannot be enabled with hwversion set', { field: 'compat6' });
  if (!Number.isSafeInteger(size) || size < 0) throw new BlockError('EINVAL', `size: ${size} is not a size in bytes`, { field: 'size' });
  const flat = o.subformat === 'monolithicFlat' || o.subformat === 'twoGbMaxExtentFlat';
  const split = o.subformat === 'twoGbMaxExtentSparse' || o.subformat === 'twoGbMaxExtentFlat';
  if (flat && backing) throw new BlockError('ENOTSUP', "backing_file: a flat image can't have a backing file", { field: 'backing_file' });
  if (flat && o.zeroed_grain) throw new BlockError('ENOTSUP', "zeroed_grain: a flat image can't enable zeroed grains", { field: 'zeroed_grain' });
  const capacity = Math.ceil(size / L.SECTOR);
  const compressed = o.subformat === 'streamOptimized';
  const here = imageName(file);
  const descriptorOf = async (extents: string[]) =>
    new TextEncoder().encode(
      descriptorFor({
        cid: newCid(),
        parentCid: backing ? await parentCid(file, backing) : 0xffffffff,
        createType: o.subformat,
        parentFileNameHint: backing?.name,
        extents,
        hwVersion: o.hwversion ?? (o.compat6 ? '6' : '4'),
        adapterType: o.adapter_type,
        toolsVersion: o.toolsversion,
        size: capacity * L.SECTOR,
      }),
    );
  if (!flat && !split) {
    if (newSparseLayout(capacity).gtCount > L.MAX_GD_ENTRIES) throw new BlockError('EINVAL', `size: ${size} bytes need more than ${L.MAX_GD_ENTRIES} grain tables`, { field: 'size' });
    const text = await descriptorOf([`RW ${capacity} SPARSE "${baseName(here ?? 'disk.vmdk')}"`]);
    if (text.length > L.EMBEDDED_DESCRIPTOR_BYTES) throw new BlockError('EINVAL', `backing_file: the descriptor would be ${text.length} bytes, more than the ${L.EMBEDDED_DESCRIPTOR_BYTES} it has room for`, { field: 'backing_file' });
    await writeSparseExtent(file, capacity, { compressed, zeroedGrain: o.zeroed_grain }, text);
    return capacity * L.SECTOR;
  }
  if (!siblings || here === undefined) {
    throw new BlockError('ENOTSUP', `subformat: ${o.subformat} needs extent files beside a descriptor file (createImage and convertImage make them)`, { field: 'subformat' });
  }
  const plans = extentPlans(baseName(here), capacity * L.SECTOR, flat, split);
  if (plans.length > L.MAX_EXTENTS) throw new BlockError('EINVAL', `size: ${size} bytes would need more than ${L.MAX_EXTENTS} extent files`, { field: 'size' });
  if (!flat && plans.some((p) => newSparseLayout(p.sectors).gtCount > L.MAX_GD_ENTRIES)) {
    throw new BlockError('EINVAL', `size: ${size} bytes need more than ${L.MAX_GD_ENTRIES} grain tables`, { field: 'size' });
  }
  // Checked before any extent file is made: the descriptor file must open again.
  const text = await descriptorOf(plans.map((p) => p.line));
  if (text.length > L.MAX_DESCRIPTOR_BYTES) throw new BlockError('EINVAL', `size: the descriptor would be ${text.length} bytes, more than ${L.MAX_DESCRIPTOR_BYTES}`, { field: 'size' });
  for (const p of plans) {
    const extent = await siblings.create(p.name);
    try {
      if (flat) await extent.truncate(p.sectors * L.SECTOR);
      else await writeSparseExtent(extent, p.sectors, { compressed: false, zeroedGrain: o.zeroed_grain });
      await extent.flush();
    } finally {
      await extent.unref();
    }
  }
  // As qemu-img: the descriptor file is the text alone, not padded to a sector.
  await file.write(0, text, true);
  await file.flush();
  return capacity * L.SECTOR;
}

/** The vmdk driver's creator (qemu-img create -f vmdk). */
export const vmdkCreator: FormatCreator<BlockNode> = { schema: vmdkCreateSchema as unknown as z.ZodType<Record<string, unknown>>, create };
