import type { BlockNode } from '../../node/node.js';
import { newSparseHeader, newSparseLayout } from './create-layout.js';
import * as L from './limits.js';

/**
 * Writes a new, empty sparse extent of `capacity` sectors on `file` as qemu-img does (QEMU
 * vmdk_init_extent): header, a 20-sector descriptor area (`descriptor` in it, or zeros in a
 * split extent), redundant and primary grain directories with every grain table made, the
 * file reaching its first grain.
 */
export async function writeSparseExtent(file: BlockNode, capacity: number, o: { compressed: boolean; zeroedGrain: boolean }, descriptor?: Uint8Array): Promise<void> {
  const layout = newSparseLayout(capacity);
  await file.write(0, newSparseHeader(layout, o), true);
  const area = new Uint8Array(L.EMBEDDED_DESCRIPTOR_BYTES);
  if (descriptor) area.set(descriptor);
  await file.write(L.SECTOR, area, true);
  await writeDirectory(file, layout.rgdOffset, layout.rgdOffset + layout.gdSectors, layout.gtSectors, layout.gtCount);
  await writeDirectory(file, layout.gdOffset, layout.gdOffset + layout.gdSectors, layout.gtSectors, layout.gtCount);
  // The grain tables are all zeros: the file only has to reach the first grain (a hole where it can be).
  await file.write(layout.grainOffset * L.SECTOR - L.SECTOR, new Uint8Array(L.SECTOR), true);
  await file.flush();
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
