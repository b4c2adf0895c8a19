import { BlockError } from '../../errors.js';
import type { DriverInstance, OpenContext } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { parseBat } from './bat.js';
import { DynamicVhd } from './dynamic.js';
import { type DynamicHeader, parseDynamicHeader } from './dynamic-header.js';
import { hasCookie, parseFooter, type VhdFooter } from './footer.js';
import { type SizeCalc, virtualSectors } from './geometry.js';
import * as L from './limits.js';
import { openParent, uuidHex } from './parent.js';

/** The driver's own options (see index.ts). */
export interface VpcOptions {
  forceSizeCalc?: SizeCalc;
  backingChain: string[];
}

const corrupt = (message: string, field: string, offset: number) => new BlockError('ECORRUPT', `vpc: ${message}`, { field, offset });

/**
 * The footer: its copy at offset 0 (dynamic and differencing images), else the one in the last
 * 512 bytes (fixed images have only that one), as QEMU's vpc_open looks for it.
 */
async function readFooter(file: BlockNode): Promise<{ footer: VhdFooter; bytes: Uint8Array; at: number }> {
  const size = file.length;
  if (size < L.FOOTER_SIZE) throw corrupt(`the file is ${size} bytes, shorter than a VHD footer`, 'cookie', 0);
  let at = 0;
  let bytes = new Uint8Array(L.FOOTER_SIZE);
  await file.read(0, bytes);
  if (!hasCookie(bytes, 0, L.FOOTER_COOKIE)) {
    at = size - L.FOOTER_SIZE;
    await file.read(at, bytes);
  }
  const footer = parseFooter(bytes, at);
  bytes = bytes.slice();
  return { footer, bytes, at };
}

function info(f: VhdFooter, size: number, h: DynamicHeader | undefined, extra: Record<string, unknown>): Record<string, unknown> {
  const subformat = f.diskType === L.DISK_FIXED ? 'fixed' : f.diskType === L.DISK_DYNAMIC ? 'dynamic' : 'differencing';
  return {
    format: 'vpc',
    subformat,
    virtualSize: size,
    ...(h ? { clusterSize: h.blockSize } : {}),
    currentSize: f.currentSize,
    geometry: { cylinders: f.cylinders, heads: f.heads, sectorsPerTrack: f.sectorsPerTrack },
    creatorApp: f.creatorApp.replace(/\0/g, ''),
    creatorOs: f.creatorOs.replace(/\0/g, ''),
    uuid: uuidHex(f.uuid),
    ...(h && f.diskType === L.DISK_DIFFERENCING ? { parentUuid: uuidHex(h.parentUuid), parentName: h.parentName, backingFormat: 'vpc' } : {}),
    ...extra,
  };
}

/** A fixed image: the disk's bytes, then the footer. */
function fixedInstance(file: BlockNode, f: VhdFooter, size: number, nodeName: string): DriverInstance {
  return {
    alignment: 1,
    length: () => size,
    read: (offset, buffer) => file.read(offset, buffer),
    write: (offset, data) => file.write(offset, data),
    flush: () => file.flush(),
    discard: async () => {},
    writeZeroes: (offset, length) => file.writeZeroes(offset, length),
    async blockStatus(offset, length) {
      const s = await file.blockStatus(offset, length);
      return { ...s, offset, allocated: true, depth: 0, node: nodeName, hostOffset: offset, hostNode: file.name };
    },
    async close() {},
    info: () => info(f, size, undefined, {}),
  };
}

/** Opens a VHD: footer, size, then for dynamic and differencing images the header, BAT and parent. */
export async function openVpc(ctx: OpenContext<VpcOptions>): Promise<DriverInstance> {
  const file = ctx.children.get('file')!;
  const fileSize = file.length;
  const { footer: f, bytes, at } = await readFooter(file);
  const size = virtualSectors(f, ctx.options.forceSizeCalc) * L.SECTOR_SIZE;
  if (f.diskType === L.DISK_FIXED) {
    if (at !== fileSize - L.FOOTER_SIZE) throw corrupt(`a fixed image's footer must be its last 512 bytes, found one at offset ${at}`, 'disk_type', at + 60);
    if (size > at) throw corrupt(`virtual size ${size} (field at offset ${at + 48}) is beyond the fixed image's ${at} bytes of data`, 'current_size', at + 48);
    return fixedInstance(file, f, size, ctx.nodeName);
  }
  // Header, BAT and locators lie before the footer at the end, which new blocks overwrite.
  const metadataEnd = fileSize - L.FOOTER_SIZE;
  if (f.dataOffset < L.FOOTER_SIZE || f.dataOffset + L.DYNAMIC_HEADER_SIZE > metadataEnd) {
    throw corrupt(`dynamic header offset ${f.dataOffset} (field at offset ${at + 16}) is outside the file before its footer (${metadataEnd} bytes)`, 'data_offset', at + 16);
  }
  const hb = new Uint8Array(L.DYNAMIC_HEADER_SIZE);
  await file.read(f.dataOffset, hb);
  const h = parseDynamicHeader(hb, f.dataOffset, metadataEnd);
  const field = f.dataOffset + 28;
  if (Math.floor(size / h.blockSize) > 0xffffffff) throw corrupt(`too many blocks of ${h.blockSize} bytes for ${size} bytes`, 'block_size', f.dataOffset + 32);
  if (h.maxTableEntries * h.blockSize < size) {
    throw corrupt(`BAT of ${h.maxTableEntries} entries (field at offset ${field}) covers less than the virtual size of ${size} bytes`, 'max_table_entries', field);
  }
  const batBytes = new Uint8Array(h.maxTableEntries * 4);
  if (batBytes.length > 0) await file.read(h.tableOffset, batBytes);
  const { bat, freeOffset } = parseBat(batBytes, { headerOffset: f.dataOffset, tableOffset: h.tableOffset, blockSize: h.blockSize, bitmapSize: h.bitmapSize, fileSize });
  const parent = f.diskType === L.DISK_DIFFERENCING ? await openParent(ctx, file, h) : undefined;
  const image = new DynamicVhd({ file, footer: bytes, size, blockSize: h.blockSize, bitmapSize: h.bitmapSize, tableOffset: h.tableOffset, bat, freeOffset, parent, differencing: f.diskType === L.DISK_DIFFERENCING, nodeName: ctx.nodeName });
  const zeros = new Uint8Array(Math.min(h.blockSize, 1024 * 1024));
  return {
    alignment: L.SECTOR_SIZE,
    length: () => size,
    read: (offset, buffer) => image.read(offset, buffer),
    write: (offset, data) => image.write(offset, data),
    flush: () => image.flush(),
    // Nothing to give back: QEMU's vpc has no discard either.
    discard: async () => {},
    writeZeroes: (offset, length) => image.writeZeroes(offset, length, zeros),
    blockStatus: (offset, length) => image.blockStatus(offset, length),
    async close() {},
    info: () => info(f, size, h, { allocatedBlocks: image.allocatedBlocks, ...(parent ? { backingNode: parent.name, backingFile: parent.child('file')?.options.filename } : {}) }),
  };
}
