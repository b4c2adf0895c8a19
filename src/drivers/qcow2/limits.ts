/** Named limits every qcow2 header field and table is checked against (QEMU's where it has them). */
export const QCOW2_MAGIC = 0x514649fb; // 'QFI\xfb'
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** Largest L1 table QEMU accepts (QCOW_MAX_L1_SIZE): 32 MiB of entries. */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
/** Largest refcount table (QCOW_MAX_REFTABLE_SIZE): 8 MiB. */
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
/** Most internal snapshots (QCOW_MAX_SNAPSHOTS). */
export const MAX_SNAPSHOTS = 65536;
/** Largest snapshot table (QCOW_MAX_SNAPSHOTS_SIZE): 64 MiB. */
export const MAX_SNAPSHOT_TABLE_BYTES = 64 * 1024 * 1024;
/** Largest extra data of one snapshot entry (QCOW_MAX_SNAPSHOT_EXTRA_DATA). */
export const MAX_SNAPSHOT_EXTRA = 1024;
/** Longest backing format name in its header extension (QEMU keeps it in char[16] with a NUL). */
export const MAX_BACKING_FORMAT = 15;
/** Most persistent bitmaps (QCOW2_MAX_BITMAPS). */
export const MAX_BITMAPS = 65535;
/** Largest bitmap directory (QCOW2_MAX_BITMAP_DIRECTORY_SIZE): 1 KiB per bitmap. */
export const MAX_BITMAP_DIRECTORY_BYTES = 1024 * MAX_BITMAPS;
/** Size of the bitmaps header extension's data. */
export const BITMAPS_EXT_BYTES = 24;
/** Size of the fixed part of a bitmap directory entry. */
export const BITMAP_ENTRY_BYTES = 24;
/** Largest bitmap table, in entries (BME_MAX_TABLE_SIZE). */
export const MAX_BITMAP_TABLE_ENTRIES = 0x8000000;
/** Bitmap granularity bits allowed (BME_MIN/MAX_GRANULARITY_BITS). */
export const MIN_BITMAP_GRANULARITY_BITS = 9;
export const MAX_BITMAP_GRANULARITY_BITS = 31;
/** Longest bitmap name (BME_MAX_NAME_SIZE). */
export const MAX_BITMAP_NAME = 1023;
/** The only bitmap type: dirty tracking. */
export const BITMAP_TYPE_DIRTY_TRACKING = 1;
/** Bitmap entry flags QEMU knows (in_use, auto); the others are reserved. */
export const BITMAP_KNOWN_FLAGS = 0x3;
/** Longest backing file name (QEMU: 1023 bytes). */
export const MAX_BACKING_NAME = 1023;
/** Deepest backing chain we open (QEMU has no limit and hangs on loops; we refuse). */
export const MAX_CHAIN_DEPTH = 64;
/** Largest virtual size a JS number addresses exactly. */
export const MAX_VIRTUAL_SIZE = Number.MAX_SAFE_INTEGER;

/** Virtual sizes count whole 512-byte sectors (QEMU: total_sectors = size / BDRV_SECTOR_SIZE). */
export const SECTOR_SIZE = 512;
/** crypt_method value of LUKS, the one method that has a crypto header extension. */
export const CRYPT_LUKS = 2;

/** Incompatible feature bits we understand. */
export const INCOMPAT_DIRTY = 1 << 0;
export const INCOMPAT_CORRUPT = 1 << 1;
export const INCOMPAT_DATA_FILE = 1 << 2;
export const INCOMPAT_COMPRESSION = 1 << 3;
export const INCOMPAT_EXTL2 = 1 << 4;
export const KNOWN_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/** Compatible bit: refcounts may be stale while the dirty bit is set (lazy_refcounts). */
export const COMPAT_LAZY_REFCOUNTS = 1 << 0;
/** Autoclear bit: the bitmaps extension is consistent with the image. */
export const AUTOCLEAR_BITMAPS = 1 << 0;
/** Autoclear bit: the external data file is a valid raw image. */
export const AUTOCLEAR_DATA_FILE_RAW = 1 << 1;

/** Header extension types. */
export const EXT_END = 0;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;
/** Largest in-memory size of one bitmap's table of clusters (BME_MAX_PHYS_SIZE): 512 MiB. */
export const MAX_BITMAP_PHYS_BYTES = 0x20000000;
/** Bitmap entry flag: the bitmap was in use (inconsistent) when the image was closed. */
export const BITMAP_FLAG_IN_USE = 1;
