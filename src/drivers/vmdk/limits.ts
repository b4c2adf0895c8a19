/** Named limits every VMDK header field, descriptor line and table is checked against (QEMU's where it has them). */

/** The hosted sparse extent magic, "KDMV" as the file's first four bytes. */
export const SPARSE_MAGIC = 0x564d444b;
/** The sector: VMDK counts offsets and sizes in 512-byte sectors. */
export const SECTOR = 512;
/** Size of the sparse extent header (one sector). */
export const HEADER_BYTES = 512;
/** Highest sparse extent version QEMU reads (3: changed block tracking, read-only unless compressed). */
export const MAX_VERSION = 3;
/** Most grain table entries per grain table (QEMU: "L2 table size too big" above). */
export const MAX_GTES_PER_GT = 512;
/** Largest grain, in sectors (QEMU: 1 GiB, "Invalid granularity"). */
export const MAX_GRAIN_SECTORS = 0x200000;
/** Most grain directory entries (QEMU: "L1 size too big"). */
export const MAX_GD_ENTRIES = 32 * 1024 * 1024;
/** Largest descriptor we read (QEMU reads at most 1 MiB - 1). */
export const MAX_DESCRIPTOR_BYTES = (1 << 20) - 1;
/** Size of the embedded descriptor area QEMU reads for CIDs (20 sectors). */
export const EMBEDDED_DESCRIPTOR_BYTES = 20 * SECTOR;
/** Most extents one descriptor may list (QEMU has none; a hostile descriptor must not open thousands of files). */
export const MAX_EXTENTS = 1024;
/** Longest extent file name (QEMU: 511 bytes). */
export const MAX_EXTENT_NAME = 511;
/** Longest parent file name hint (QEMU: PATH_MAX-sized backing file name). */
export const MAX_PARENT_NAME = 4095;
/** Deepest chain of VMDK parents we open (QEMU has no limit; loops are refused before it). */
export const MAX_CHAIN_DEPTH = 64;
/** Largest virtual size: sectors a JS number addresses exactly. */
export const MAX_CAPACITY_SECTORS = Math.floor(Number.MAX_SAFE_INTEGER / SECTOR);
/** Largest sparse extent file QEMU writes (VMDK_EXTENT_MAX_SECTORS: 2^32 sectors, grain entries are 32-bit). */
export const MAX_SPARSE_FILE_SECTORS = 2 ** 32;
/** Grain tables kept in memory per sparse extent. */
export const GT_CACHE_TABLES = 512;

/** Header flags. */
export const FLAG_NL_DETECT = 1 << 0;
export const FLAG_RGD = 1 << 1;
export const FLAG_ZERO_GRAIN = 1 << 2;
export const FLAG_COMPRESS = 1 << 16;
export const FLAG_MARKER = 1 << 17;
/** compressAlgorithm value of deflate (a zlib stream per grain). */
export const COMPRESSION_DEFLATE = 1;
/** gdOffset meaning "the grain directory is named in the footer at the end of the file". */
export const GD_AT_END = 0xffffffffffffffffn;
/** Grain table entry of a zeroed grain (with FLAG_ZERO_GRAIN). */
export const GTE_ZEROED = 1;

/** Stream markers (streamOptimized): the type of a metadata marker (a grain marker has a non-zero size). */
export const MARKER_EOS = 0;
export const MARKER_GT = 1;
export const MARKER_GD = 2;
export const MARKER_FOOTER = 3;
/** Bytes before a compressed grain's data: lba (8) and size (4). */
export const GRAIN_MARKER_BYTES = 12;
/** Footer marker + footer + end-of-stream marker: three sectors at the end of the file. */
export const FOOTER_AREA_BYTES = 3 * SECTOR;
