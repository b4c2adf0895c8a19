import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import { Bat, batGeometry } from './bat.js';
import { pickHeader, validateHeaderLog } from './header.js';
import { HeaderUpdater } from './header-update.js';
import * as L from './limits.js';
import { pendingLog, replayLog, replayRefusal } from './log.js';
import { readMetadata, type VhdxMetadata } from './metadata.js';
import { claimRegion, type FileRegion, parseRegionTable, type RegionTable } from './regions.js';

/** Everything an open VHDX node is made of. */
export interface OpenedVhdx {
  headers: HeaderUpdater;
  regions: RegionTable;
  meta: VhdxMetadata;
  bat: Bat;
  /** The log was replayed when the image was opened. */
  logReplayed: boolean;
  /** The file's structures: header section, log, BAT, metadata. */
  taken: FileRegion[];
}

async function readAt(file: BlockNode, offset: number, length: number): Promise<Uint8Array> {
  const b = new Uint8Array(length);
  await file.read(offset, b);
  return b;
}

/** The file's name for messages (QEMU names the image file). */
function fileName(file: BlockNode): string {
  const f = file.options.filename;
  return typeof f === 'string' ? f : file.name;
}

/**
 * Opens a VHDX in `file` in QEMU's order (vhdx_open): file identifier, headers, log (replayed when
 * writable, refused when read-only), region table, metadata, BAT; every field checked before use.
 */
export async function openVhdx(file: BlockNode, writable: boolean, nodeName: string, checkBat = true): Promise<OpenedVhdx> {
  if (file.length < L.HEADER_SECTION_BYTES) {
    throw new BlockError('ECORRUPT', `vhdx: the file (${file.length} bytes) is shorter than the 1 MiB header section`, { node: nodeName, field: 'header', offset: 0 });
  }
  const id = new TextDecoder().decode(await readAt(file, 0, 8));
  if (id !== L.FILE_SIGNATURE) throw new BlockError('ECORRUPT', 'vhdx: not a VHDX file (no "vhdxfile" signature)', { node: nodeName, field: 'signature', offset: 0 });
  const picked = pickHeader(await readAt(file, L.HEADER1_OFFSET, L.HEADER_CRC_BYTES), await readAt(file, L.HEADER2_OFFSET, L.HEADER_CRC_BYTES), nodeName);
  validateHeaderLog(picked.header, file.length, nodeName);
  const headers = new HeaderUpdater(file, picked.header, picked.index);

  const taken: FileRegion[] = [{ name: 'header section', start: 0, end: L.HEADER_SECTION_BYTES }];
  const h = headers.header;
  if (h.logLength > 0) claimRegion(taken, { name: 'log', start: h.logOffset, end: h.logOffset + h.logLength }, nodeName, 'log_offset');

  const pending = await pendingLog(file, h, nodeName);
  if (pending.length > 0) {
    if (!writable) throw replayRefusal(fileName(file), nodeName);
    await replayLog(file, h, pending, nodeName);
    // an empty log from now on: its GUID cleared, a new data write GUID (the replay changed what reads see)
    await headers.update(true, new Uint8Array(16));
  }

  const regions = parseRegionTable(await readAt(file, L.REGION_TABLE_OFFSET, L.HEADER_BLOCK_BYTES), file.length, taken, nodeName);
  const table = await readAt(file, regions.metadata.start, Math.min(L.METADATA_TABLE_BYTES, regions.metadata.end - regions.metadata.start));
  const meta = await readMetadata(table, regions.metadata, (o, n) => readAt(file, o, n), nodeName);

  const g = batGeometry(meta.virtualSize, meta.blockSize, meta.logicalSectorSize, meta.hasParent);
  const batBytes = g.entries * L.BAT_ENTRY_BYTES;
  if (batBytes > regions.bat.end - regions.bat.start) {
    throw new BlockError('ECORRUPT', `vhdx: the BAT region (${regions.bat.end - regions.bat.start} bytes) is too small for ${g.entries} entries`, { node: nodeName, field: 'bat', offset: regions.bat.start });
  }
  if (batBytes > L.MAX_BAT_BYTES) {
    throw new BlockError('ENOTSUP', `vhdx: the BAT (${batBytes} bytes) is larger than the ${L.MAX_BAT_BYTES} bytes loaded here`, { node: nodeName, field: 'bat', offset: regions.bat.start });
  }
  const bat = new Bat(g, await readAt(file, regions.bat.start, batBytes));
  if (checkBat) bat.validate(file.length, meta.virtualSize, taken, regions.bat.start, nodeName, meta.hasParent);
  return { headers, regions, meta, bat, logReplayed: pending.length > 0, taken };
}
