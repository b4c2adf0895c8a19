import { BlockError } from '../../errors.js';
import type { NodeOptions, OpenContext } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { dirName, isAbsolutePath, joinPath } from '../../platform/files.js';
import { locationOf } from '../qcow2/backing.js';
import { type Descriptor, DESCRIPTOR_CREATE_TYPES, descriptorText, parseDescriptor } from './descriptor.js';
import type { OpenExtent } from './extent.js';
import { FlatExtent } from './flat-extent.js';
import { hasCowdMagic, hasSparseMagic } from './header.js';
import * as L from './limits.js';
import { readSparseMetadata } from './open-sparse.js';
import { type Fallback, readClamped, SparseExtent } from './sparse-extent.js';

/** What opening a VMDK found: its descriptor, create type and extents in guest order. */
export interface OpenedDisk {
  descriptor: Descriptor;
  createType: string;
  extents: OpenExtent[];
  /** Version of the first sparse extent's header (3 is read-only unless compressed). */
  version: number | undefined;
  /** Where the descriptor is (a sparse file's embedded area, or the whole descriptor file) and its bytes, to write a new CID. */
  descriptorArea: { node: BlockNode; offset: number; bytes: Uint8Array; fixed: boolean } | undefined;
}

const URL_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/** Options of the protocol node of a file named in a descriptor, relative to the descriptor's own location. */
export function namedFileOptions(file: BlockNode, name: string, readOnly: boolean, what: string): NodeOptions {
  const here = locationOf(file);
  const forceShare = file.options.forceShare === true;
  if (URL_SCHEME.test(name)) return { driver: 'http', url: name };
  if (here?.kind === 'url') return { driver: 'http', url: new URL(name, here.name).href };
  let filename = name;
  if (!isAbsolutePath(name)) {
    if (here === undefined) throw new BlockError('ENOTSUP', `vmdk: cannot resolve the relative ${what} name '${name}': the descriptor is neither a file nor a URL`, { field: what });
    filename = joinPath(dirName(here.name), name);
  }
  return { driver: 'file', filename, readOnly, ...(forceShare ? { forceShare } : {}) };
}

/** The extent of a hosted sparse file, starting at guest offset `start`. */
async function sparseExtent(file: BlockNode, start: number, fallback: Fallback) {
  const m = await readSparseMetadata(file);
  return { extent: new SparseExtent(file, m.header, m.layout, m.gd, m.rgd, start, fallback), meta: m };
}

/** Opens the disk in `file`: a sparse file with its descriptor inside, or a descriptor file and its extent files. */
export async function openDisk(ctx: Pick<OpenContext<unknown>, 'openChild' | 'readOnly' | 'nodeName'>, file: BlockNode, fallback: Fallback): Promise<OpenedDisk> {
  const head = new Uint8Array(Math.min(file.length, L.MAX_DESCRIPTOR_BYTES));
  if (head.length < 4) throw new BlockError('ECORRUPT', `vmdk: the file is too small (${file.length} bytes) to be an image`, { field: 'file', node: ctx.nodeName });
  await readClamped(file, 0, head.subarray(0, Math.min(head.length, L.HEADER_BYTES)));
  if (hasSparseMagic(head) || hasCowdMagic(head)) {
    const { extent, meta } = await sparseExtent(file, 0, fallback);
    const descriptor = parseDescriptor(meta.descriptor ? descriptorText(meta.descriptor) : '');
    // As QEMU: the file's own header decides, whatever its embedded descriptor says.
    const createType = meta.layout.compressed ? 'streamOptimized' : 'monolithicSparse';
    const descriptorArea = meta.descriptor ? { node: file, offset: meta.header.descriptorOffset * L.SECTOR, bytes: meta.descriptor, fixed: true } : undefined;
    return { descriptor, createType, extents: [{ extent, type: '', readOnly: false, filename: locationOf(file)?.name }], version: meta.header.version, descriptorArea };
  }
  await readClamped(file, 0, head);
  const descriptor = parseDescriptor(descriptorText(head));
  const createType = descriptor.createType;
  if (createType === undefined) throw new BlockError('ECORRUPT', 'vmdk: invalid VMDK image descriptor (no createType)', { field: 'createType', node: ctx.nodeName });
  if (!DESCRIPTOR_CREATE_TYPES.includes(createType)) throw new BlockError('ENOTSUP', `vmdk: unsupported image type '${createType}'`, { field: 'createType', node: ctx.nodeName });
  const extents: OpenExtent[] = [];
  let start = 0;
  let version: number | undefined;
  for (const [i, line] of descriptor.extents.entries()) {
    const { type } = line;
    if (type !== 'FLAT' && type !== 'VMFS' && type !== 'SPARSE') {
      throw new BlockError('ENOTSUP', `vmdk: unsupported extent type '${type}' (extent ${i}: FLAT, VMFS and SPARSE are)`, { field: `extent${i}`, node: ctx.nodeName });
    }
    const readOnly = ctx.readOnly || line.access === 'RDONLY';
    const child = await ctx.openChild(`extent${i}`, namedFileOptions(file, line.filename, readOnly, 'extent file'));
    const filename = locationOf(child)?.name;
    const length = line.sectors * L.SECTOR;
    if (start + length > L.MAX_CAPACITY_SECTORS * L.SECTOR) throw new BlockError('ECORRUPT', `vmdk: the extents add up to more than ${L.MAX_CAPACITY_SECTORS} sectors`, { field: `extent${i}` });
    if (type === 'SPARSE') {
      const { extent, meta } = await sparseExtent(child, start, fallback);
      // As QEMU, the extent's header says how much of the disk it holds, whatever the line says.
      version ??= meta.header.version;
      extents.push({ extent, type, readOnly: line.access === 'RDONLY', filename });
      start += meta.layout.capacityBytes;
    } else {
      extents.push({ extent: new FlatExtent(child, start, length, line.offset * L.SECTOR), type, readOnly: line.access === 'RDONLY', filename });
      start += length;
    }
  }
  return { descriptor, createType, extents, version, descriptorArea: { node: file, offset: 0, bytes: head, fixed: false } };
}
