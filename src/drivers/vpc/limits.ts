/** Named limits every VHD footer, dynamic header and BAT field is checked against (QEMU's where it has them). */

/** The footer's cookie ("conectix"), at offset 0 of a dynamic image's copy and in the last 512 bytes of every image. */
export const FOOTER_COOKIE = 'conectix';
/** The dynamic header's cookie. */
export const DYNAMIC_COOKIE = 'cxsparse';
/** Size of the footer (and of its copy at offset 0). */
export const FOOTER_SIZE = 512;
/** Size of the dynamic disk header. */
export const DYNAMIC_HEADER_SIZE = 1024;
export const SECTOR_SIZE = 512;

/** Disk types of the footer's `disk_type` field. */
export const DISK_FIXED = 2;
export const DISK_DYNAMIC = 3;
export const DISK_DIFFERENCING = 4;

/** A BAT entry of a block that is not in the file. */
export const BAT_UNALLOCATED = 0xffffffff;
/** The footer's `data_offset` of a fixed image: no further structure. */
export const NO_DATA_OFFSET = 0xffffffffffffffffn;

/** Largest virtual size in sectors QEMU accepts (VHD_MAX_SECTORS: 2040 GiB). */
export const MAX_SECTORS = 0xff000000;
/** The largest CHS geometry (65535 × 16 × 255): images this big take their size from the footer. */
export const CHS_MAX_C = 65535;
export const CHS_MAX_H = 16;
export const CHS_MAX_S = 255;
export const MAX_GEOMETRY = CHS_MAX_C * CHS_MAX_H * CHS_MAX_S;

/** Block sizes: a power of two from one sector (QEMU's minimum) to 2^31 (the field is 32 bits). */
export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 2 ** 31;
/** Block size of images we create (QEMU: 2 MiB). */
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
/** Largest BAT we read into memory (ours; QEMU's INT_MAX / 4 entries would be 2 GiB): 32 MiB, 8 Mi entries. */
export const MAX_BAT_BYTES = 32 * 1024 * 1024;
/** Largest host offset a BAT entry (32 bits of sectors) can name. */
export const MAX_BAT_SECTOR = 0xfffffffe;

/** Parent locator entries in the dynamic header. */
export const PARENT_LOCATORS = 8;
/** Longest parent locator we read (a Windows path of 32767 UTF-16 units). */
export const MAX_LOCATOR_BYTES = 65536;
/** Deepest chain of differencing images we open (QEMU has no chain for vpc; we refuse loops and depth). */
export const MAX_CHAIN_DEPTH = 64;

/** Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC). */
export const VHD_EPOCH = 946684800;
/** Bytes of sector bitmaps cached per open image (a 2 MiB block's bitmap is one sector: 8192 of them). */
export const BITMAP_CACHE_BYTES = 4 * 1024 * 1024;
