import { BlockError } from '../../errors.js';
import type { VhdFooter } from './footer.js';
import * as L from './limits.js';

/** A disk's CHS geometry (cylinders × heads × sectors per track). */
export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** Sectors a geometry addresses. */
export const chsSectors = (g: Geometry): number => g.cylinders * g.heads * g.sectorsPerTrack;

/**
 * The geometry of a disk of `sectors` sectors, by the VHD specification's algorithm as QEMU's
 * calculate_geometry applies it: 17, 31, then 63 sectors per track, 255 beyond 65535×16×63.
 * It may address fewer sectors than asked (the caller asks again with more).
 */
export function calculateGeometry(sectors: number): Geometry {
  const total = Math.min(sectors, L.MAX_GEOMETRY);
  let spt: number;
  let heads: number;
  let cth: number; // cylinders × heads
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(total / spt);
  } else {
    spt = 17;
    cth = Math.floor(total / spt);
    // QEMU keeps heads in a uint8_t: a huge quotient wraps, which the `> 16` test then catches.
    heads = Math.ceil(cth / 1024) & 0xff;
    if (heads < 4) heads = 4;
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(total / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

/**
 * What qemu-img create gives a disk of `size` bytes (QEMU vpc_co_create): the smallest geometry
 * that holds it (so that convert never truncates), and that geometry's size; with `forceSize`, or
 * beyond what CHS can address, the maximal geometry and the size itself in whole sectors.
 */
export function createGeometry(size: number, forceSize: boolean): Geometry & { sectors: number } {
  let g: Geometry = { cylinders: 0, heads: 0, sectorsPerTrack: 0 };
  if (forceSize) g = { cylinders: L.CHS_MAX_C, heads: L.CHS_MAX_H, sectorsPerTrack: L.CHS_MAX_S };
  else {
    const want = Math.min(L.MAX_GEOMETRY, Math.floor(size / L.SECTOR_SIZE));
    for (let i = 0; want > chsSectors(g); i++) g = calculateGeometry(want + i);
  }
  let sectors = chsSectors(g);
  if (sectors === L.MAX_GEOMETRY) {
    sectors = Math.floor(size / L.SECTOR_SIZE);
    if (sectors > L.MAX_SECTORS) {
      throw new BlockError('EFBIG', `vpc: size ${size} is too large: the largest VHD is 2040 GiB`, { field: 'size' });
    }
  }
  return { ...g, sectors };
}

/** How the virtual size is taken from the footer (QEMU's `force_size_calc`): by CHS or by current_size. */
export type SizeCalc = 'chs' | 'current_size';

/** Creator applications whose images take their size from current_size (QEMU vpc_open's table). */
const CURRENT_SIZE_CREATORS = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'];

/**
 * The virtual size in sectors as QEMU reports it (vpc_open): Virtual PC and old QEMU sized a disk
 * by its geometry, Hyper-V, disk2vhd, Xen and `force_size` images by current_size; a maximal
 * geometry, or `force: 'current_size'`, always means current_size.
 */
export function virtualSectors(f: VhdFooter, force?: SizeCalc): number {
  const chs = f.cylinders * f.heads * f.sectorsPerTrack;
  const useChs = !CURRENT_SIZE_CREATORS.includes(f.creatorApp) || force === 'chs';
  const sectors = !useChs || chs === L.MAX_GEOMETRY || force === 'current_size' ? Math.floor(f.currentSize / L.SECTOR_SIZE) : chs;
  if (sectors > L.MAX_SECTORS) {
    throw new BlockError('EFBIG', `vpc: virtual size of ${sectors} sectors is beyond the VHD limit of 2040 GiB`, { field: 'current_size', offset: 48 });
  }
  return sectors;
}
