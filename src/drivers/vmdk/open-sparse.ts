import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import { headerError, parseFooter, parseSparseHeader, type SparseHeader, type SparseLayout, sparseLayout } from './header.js';
import * as L from './limits.js';
import { checkNoOverlaps, grainTableRanges, type MetadataRange } from './overlaps.js';
import { readClamped } from './sparse-extent.js';

/** A sparse extent file's metadata, read and checked: header (or footer), layout, directories and the embedded descriptor. */
export interface SparseMetadata {
  header: SparseHeader;
  layout: SparseLayout;
  gd: Uint32Array;
  rgd: Uint32Array | undefined;
  /** The embedded descriptor's bytes, if the header names one. */
  descriptor: Uint8Array | undefined;
}

async function readBytes(file: BlockNode, offset: number, length: number): Promise<Uint8Array> {
  const b = new Uint8Array(length);
  await readClamped(file, offset, b);
  return b;
}

function directory(bytes: Uint8Array): Uint32Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const d = new Uint32Array(bytes.length / 4);
  for (let i = 0; i < d.length; i++) d[i] = v.getUint32(i * 4, true);
  return d;
}

/** Reads and validates a hosted sparse extent file (every field against the limits and the file size before use). */
export async function readSparseMetadata(file: BlockNode): Promise<SparseMetadata> {
  const size = file.length;
  let header = parseSparseHeader(await readBytes(file, 0, Math.min(size, L.HEADER_BYTES)));
  let base = 0;
  if (header.gdOffset === undefined) {
    // The grain directory is only known at the end of the stream: the footer's header counts.
    base = Math.ceil(size / L.SECTOR) * L.SECTOR - L.FOOTER_AREA_BYTES;
    if (base < L.HEADER_BYTES) throw new BlockError('ECORRUPT', `vmdk: the header puts the grain directory in a footer, and the file (${size} bytes) has no room for one`, { field: 'footer', offset: 0 });
    header = parseFooter(await readBytes(file, base, L.FOOTER_AREA_BYTES), base);
    base += L.SECTOR;
  }
  if (header.overhead * L.SECTOR > size) throw headerError('overHead', `file truncated: the grains start at ${header.overhead * L.SECTOR}, the file has ${size} bytes`, base);
  const layout = sparseLayout(header, size, base);
  const gdBytes = layout.gdEntries * 4;
  const gd = directory(await readBytes(file, layout.gdOffset, gdBytes));
  const rgd = layout.rgdOffset !== undefined ? directory(await readBytes(file, layout.rgdOffset, gdBytes)) : undefined;
  let descriptor: Uint8Array | undefined;
  const ranges: MetadataRange[] = [
    { start: 0, end: L.HEADER_BYTES, what: 'header', at: 0 },
    { start: layout.gdOffset, end: layout.gdOffset + gdBytes, what: 'grain directory', at: base + 56 },
    ...grainTableRanges(gd, layout.gdOffset, layout.gtBytes, 'grain table of directory entry'),
  ];
  if (rgd) {
    ranges.push({ start: layout.rgdOffset!, end: layout.rgdOffset! + gdBytes, what: 'redundant grain directory', at: base + 48 });
    ranges.push(...grainTableRanges(rgd, layout.rgdOffset!, layout.gtBytes, 'redundant grain table of directory entry'));
  }
  if (header.descriptorOffset > 0 && header.descriptorSize > 0) {
    const start = header.descriptorOffset * L.SECTOR;
    const bytes = Math.min(header.descriptorSize * L.SECTOR, L.MAX_DESCRIPTOR_BYTES);
    if (start + bytes > size) throw headerError('descriptorOffset', `the embedded descriptor (${bytes} bytes at ${start}) is not inside the file (${size} bytes)`, base);
    descriptor = await readBytes(file, start, bytes);
    ranges.push({ start, end: start + bytes, what: 'embedded descriptor', at: base + 28 });
  }
  checkNoOverlaps(ranges, size);
  return { header, layout, gd, rgd, descriptor };
}
