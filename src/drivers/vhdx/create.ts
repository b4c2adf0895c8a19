
import { BlockError } from '../../errors.js';
import type { CreateBacking, FormatCreator } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { parseOptions } from '../../options/zod-error.js';
import { dirName, isAbsolutePath, joinPath, readFileHead, realPath } from '../../platform/files.js';
import { locationOf } from '../qcow2/backing.js';
import { Bat, batGeometry } from './bat.js';
import { checksumWithField } from './crc32c.js';
import { guidBytes, guidText, randomGuid } from './guid.js';
import { pickHeader, serializeHeader } from './header.js';
import { vhdxFacts } from './facts.js';
import * as L from './limits.js';

/** qemu-img's `-o` options of vhdx, with its defaults. */
const schema = vhdxFacts.createSchema();

/** QEMU's automatic block size: larger blocks for larger disks, to keep the BAT small. */
export function autoBlockSize(size: number): number {
  if (size > 32 * 2 ** 40) return 64 * L.MiB;
  if (size > 100 * 2 ** 30) return 32 * L.MiB;
  if (size > 2 ** 30) return 16 * L.MiB;
  return 8 * L.MiB;
}

const roundUp = (x: number, to: number) => Math.ceil(x / to) * to;

/** Where the parts of a new image go (QEMU vhdx_co_create): log at 1 MiB, then BAT, then metadata, data 5 MiB past the BAT. */
export function createLayout(size: number, blockSize: number, logSize: number, hasParent = false) {
  const g = batGeometry(size, blockSize, 512, hasParent);
  const batOffset = roundUp(L.HEADER_SECTION_BYTES + logSize, L.MiB);
  const batLength = roundUp(g.entries * L.BAT_ENTRY_BYTES, L.MiB);
  const metadataOffset = roundUp(batOffset + batLength, L.MiB);
  const dataOffset = batOffset + batLength + L.CREATE_DATA_GAP;
  return { g, batOffset, batLength, metadataOffset, dataOffset };
}

function u32(b: Uint8Array, at: number, x: number): void {
  new DataView(b.buffer, b.byteOffset).setUint32(at, x, true);
}
function u64(b: Uint8Array, at: number, x: number): void {
  new DataView(b.buffer, b.byteOffset).setBigUint64(at, BigInt(x), true);
}

function regionTable(batOffset: number, batLength: number, metadataOffset: number): Uint8Array {
  const b = new Uint8Array(L.HEADER_BLOCK_BYTES);
  u32(b, 0, L.REGION_SIGNATURE);
  u32(b, 8, 2);
  const entry = (at: number, guid: string, offset: number, length: number) => {
    b.set(guidBytes(guid), at);
    u64(b, at + 16, offset);
    u32(b, at + 24, length);
    u32(b, at + 28, L.REGION_REQUIRED);
  };
  entry(16, L.BAT_GUID, batOffset, batLength);
  entry(48, L.METADATA_GUID, metadataOffset, L.CREATE_METADATA_BYTES);
  u32(b, 4, checksumWithField(b, 4));
  return b;
}

/** A parent locator item (spec 3.5.2.5): the VHDX locator type, then UTF-16LE key/value pairs. */
export function parentLocatorItem(entries: Record<string, string>): Uint8Array {
  const pairs = Object.entries(entries);
  const utf16 = (t: string) => {
    const b = new Uint8Array(t.length * 2);
    for (let i = 0; i < t.length; i++) new DataView(b.buffer).setUint16(i * 2, t.charCodeAt(i), true);
    return b;
  };
  const texts = pairs.map(([k, v]) => [utf16(k), utf16(v)]);
  const length = 20 + pairs.length * 12 + texts.reduce((n, [k, v]) => n + k.length + v.length, 0);
  const b = new Uint8Array(length);
  const v = new DataView(b.buffer);
  b.set(guidBytes(L.PARENT_VHDX_GUID), 0);
  v.setUint16(18, pairs.length, true);
  let at = 20 + pairs.length * 12;
  texts.forEach(([key, value], i) => {
    const e = 20 + i * 12;
    v.setUint32(e, at, true);
    v.setUint16(e + 8, key.length, true);
    b.set(key, at);
    at += key.length;
    v.setUint32(e + 4, at, true);
    v.setUint16(e + 10, value.length, true);
    b.set(value, at);
    at += value.length;
  });
  return b;
}

/** The metadata region's first 64 KiB and the items after it (QEMU vhdx_create_new_metadata; a parent locator for a differencing image). */
function metadata(size: number, blockSize: number, fixed: boolean, locator?: Uint8Array): { table: Uint8Array; items: Uint8Array } {
  const table = new Uint8Array(L.METADATA_TABLE_BYTES);
  table.set(new TextEncoder().encode(L.METADATA_SIGNATURE), 0);
  new DataView(table.buffer).setUint16(10, locator ? 6 : 5, true);
  const items = new Uint8Array(40 + (locator?.length ?? 0));
  u32(items, 0, blockSize);
  u32(items, 4, (fixed ? L.PARAMS_LEAVE_BLOCKS_ALLOCATED : 0) | (locator ? L.PARAMS_HAS_PARENT : 0));
  u64(items, 8, size);
  items.set(randomGuid(), 16);
  u32(items, 32, 512);
  u32(items, 36, 512);
  const list: [string, number, number, number][] = [
    [L.FILE_PARAMETERS_GUID, 0, 8, L.META_IS_REQUIRED],
    [L.VIRTUAL_DISK_SIZE_GUID, 8, 8, L.META_IS_REQUIRED | L.META_IS_VIRTUAL_DISK],
    [L.PAGE83_GUID, 16, 16, L.META_IS_REQUIRED | L.META_IS_VIRTUAL_DISK],
    [L.LOGICAL_SECTOR_SIZE_GUID, 32, 4, L.META_IS_REQUIRED | L.META_IS_VIRTUAL_DISK],
    [L.PHYSICAL_SECTOR_SIZE_GUID, 36, 4, L.META_IS_REQUIRED | L.META_IS_VIRTUAL_DISK],
  ];
  if (locator) {
    items.set(locator, 40);
    list.push([L.PARENT_LOCATOR_GUID, 40, locator.length, L.META_IS_REQUIRED]);
  }
  list.forEach(([guid, offset, length, flags], i) => {
    const at = 32 + i * L.METADATA_ENTRY_BYTES;
    table.set(guidBytes(guid), at);
    u32(table, at + 16, L.METADATA_TABLE_BYTES + offset);
    u32(table, at + 20, length);
    u32(table, at + 24, flags);
  });
  return { table, items };
}

/** The parent locator of a new differencing image over `backing`: its linkage (data write GUID) and paths. */
async function locatorFor(file: BlockNode, backing: CreateBacking): Promise<Uint8Array> {
  if (backing.format !== 'vhdx') throw new BlockError('ENOTSUP', `vhdx: a differencing image needs a VHDX parent, not ${backing.format}`, { field: 'backing_fmt' });
  const image = locationOf(file);
  if (image?.kind !== 'file') throw new BlockError('ENOTSUP', 'vhdx: differencing images are made in local files only', { field: 'backing_file' });
  const path = isAbsolutePath(backing.name) ? backing.name : joinPath(dirName(image.name), backing.name);
  const head = await readFileHead(path, L.REGION_TABLE_OFFSET);
  if (head.length < L.REGION_TABLE_OFFSET) throw new BlockError('EINVAL', `vhdx: the parent '${path}' is too short to be a VHDX`, { field: 'backing_file', path });
  const { header } = pickHeader(head.subarray(L.HEADER1_OFFSET), head.subarray(L.HEADER2_OFFSET), path);
  const entries: Record<string, string> = { parent_linkage: `{${guidText(header.dataWriteGuid)}}` };
  const windows = (p: string) => p.replace(/\//g, '\\');
  if (!isAbsolutePath(backing.name)) entries.relative_path = `.\\${windows(backing.name)}`;
  entries.absolute_win32_path = windows(await realPath(path));
  return parentLocatorItem(entries);
}

async function createVhdx(file: BlockNode, requested: number, input: Record<string, unknown>, backing?: CreateBacking): Promise<number> {
  const o = parseOptions(schema, input);
  if (backing && o.subformat === 'fixed') throw new BlockError('EINVAL', 'vhdx: a differencing image is dynamic (subformat=fixed with a backing file)', { field: 'subformat' });
  const locator = backing ? await locatorFor(file, backing) : undefined;
  const size = roundUp(requested === 0 && backing ? backing.size : requested, 512);
  if (size > L.MAX_VIRTUAL_SIZE) throw new BlockError('EINVAL', `vhdx: image size ${size} is too large; max of 64 TiB`, { field: 'size' });
  const logSize = roundUp(o.log_size, L.MiB);
  if (logSize < L.MiB || logSize > L.MAX_LOG_BYTES) throw new BlockError('EINVAL', `vhdx: log_size ${o.log_size}: must be from 1 MiB to below 4 GiB`, { field: 'log_size' });
  let blockSize = Math.min(roundUp(o.block_size, L.MiB), L.MAX_BLOCK_SIZE);
  if (blockSize === 0) blockSize = autoBlockSize(size);
  if ((blockSize & (blockSize - 1)) !== 0) throw new BlockError('EINVAL', `vhdx: block_size ${blockSize}: must be a power of two`, { field: 'block_size' });
  const fixed = o.subformat === 'fixed';
  const { g, batOffset, batLength, metadataOffset, dataOffset } = createLayout(size, blockSize, logSize, locator !== undefined);
  if (batLength > L.MAX_BAT_BYTES) throw new BlockError('EINVAL', `vhdx: the BAT would be ${batLength} bytes (at most ${L.MAX_BAT_BYTES}); choose a larger block_size`, { field: 'block_size' });

  // the file's end first: a fixed image's data, or the gap after the metadata (sparse, as QEMU truncates)
  const end = fixed ? dataOffset + size : dataOffset;
  await file.write(end - L.LOG_SECTOR_BYTES, new Uint8Array(L.LOG_SECTOR_BYTES), true);

  const id = new Uint8Array(L.HEADER_BLOCK_BYTES);
  id.set(new TextEncoder().encode(L.FILE_SIGNATURE), 0);
  const creator = 'blocklayer';
  for (let i = 0; i < creator.length; i++) id[8 + i * 2] = creator.charCodeAt(i); // UTF-16LE, diagnostic only
  await file.write(0, id);

  const header = { sequence: BigInt(crypto.getRandomValues(new Uint32Array(1))[0]), fileWriteGuid: randomGuid(), dataWriteGuid: randomGuid(), logGuid: new Uint8Array(16), logVersion: L.LOG_VERSION, version: L.HEADER_VERSION, logLength: logSize, logOffset: L.HEADER_SECTION_BYTES };
  await file.write(L.HEADER1_OFFSET, serializeHeader(header));
  await file.write(L.HEADER2_OFFSET, serializeHeader({ ...header, sequence: header.sequence + 1n }));
  const rt = regionTable(batOffset, batLength, metadataOffset);
  await file.write(L.REGION_TABLE_OFFSET, rt);
  await file.write(L.REGION_TABLE2_OFFSET, rt);

  // A differencing image starts with every block NOT_PRESENT (ZERO would hide the parent).
  if (!locator && (fixed || o.block_state_zero)) {
    const bat = new Bat(g, new Uint8Array(batLength));
    for (let b = 0; b < g.payloadBlocks; b++) {
      if (o.block_state_zero) bat.set(b, L.PAYLOAD_BLOCK_ZERO, 0);
      else bat.set(b, L.PAYLOAD_BLOCK_FULLY_PRESENT, roundUp(dataOffset + b * blockSize, L.MiB));
    }
    if (batLength > 0) await file.write(batOffset, bat.bytes);
  }
  const m = metadata(size, blockSize, fixed, locator);
  await file.write(metadataOffset, m.table);
  await file.write(metadataOffset + L.METADATA_TABLE_BYTES, m.items);
  await file.flush();
  return size;
}

/** Creates VHDX images as `qemu-img create -f vhdx` does; with a backing file, a differencing image (which qemu-img cannot make). */
export const vhdxCreator: FormatCreator<BlockNode> = { schema, create: createVhdx };
