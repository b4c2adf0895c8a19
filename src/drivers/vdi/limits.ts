/** Named limits and constants every VDI header field and block map entry is checked against (QEMU block/vdi.c where it has them). */

/** The signature at byte 0x40 (little endian). */
export const VDI_SIGNATURE = 0xbeda107f;
/** The one version QEMU and we read: 1.1. */
export const VDI_VERSION_1_1 = 0x00010001;
/** Image types: a dynamic image allocates blocks as they are written, a static one has them all from the start. */
export const TYPE_DYNAMIC = 1;
export const TYPE_STATIC = 2;
/** Block map entry of a block never written: reads as zeros (there is no backing file). */
export const BLOCK_UNALLOCATED = 0xffffffff;
/** Block map entry of a discarded block: reads as zeros. Entries below it are block indexes. */
export const BLOCK_ZERO = 0xfffffffe;

/** Bytes of the header as QEMU writes it (text, pre-header, header, padding to one sector). */
export const HEADER_BYTES = 512;
/** The text at the start of the header of images we create (the value does not matter to readers). */
export const HEADER_TEXT = '<<< QEMU VM Virtual Disk Image >>>\n';
/** Bytes before `header_size` starts counting: the 64-byte text, the signature and the version. */
export const PRE_HEADER_BYTES = 0x48;
/** Smallest `header_size` that holds every field we read (up to the parent UUID); QEMU writes 0x180, VirtualBox 0x190. */
export const MIN_HEADER_SIZE = 0x180;
/** The only sector size (QEMU: SECTOR_SIZE). */
export const SECTOR_SIZE = 512;
/** The only block size QEMU supports (DEFAULT_CLUSTER_SIZE): 1 MiB. */
export const BLOCK_SIZE = 1024 * 1024;
/** Bytes per block map entry. */
export const ENTRY_BYTES = 4;
/**
 * Most blocks we open: 16 Mi blocks (a 64 MiB block map, a 16 TiB disk). QEMU allows 0x3fffffff
 * (a 4 GiB map held in memory); we bound the memory a hostile header can make us allocate.
 */
export const MAX_BLOCKS = 16 * 1024 * 1024;
/** Largest virtual size: every block of {@link MAX_BLOCKS}. */
export const MAX_DISK_SIZE = MAX_BLOCKS * BLOCK_SIZE;

/** Byte offsets of the header fields (all little endian). */
export const OFF = {
  signature: 0x40,
  version: 0x44,
  headerSize: 0x48,
  imageType: 0x4c,
  imageFlags: 0x50,
  description: 0x54,
  offsetBmap: 0x154,
  offsetData: 0x158,
  cylinders: 0x15c,
  heads: 0x160,
  sectors: 0x164,
  sectorSize: 0x168,
  diskSize: 0x170,
  blockSize: 0x178,
  blockExtra: 0x17c,
  blocksInImage: 0x180,
  blocksAllocated: 0x184,
  uuidImage: 0x188,
  uuidLastSnap: 0x198,
  uuidLink: 0x1a8,
  uuidParent: 0x1b8,
} as const;
/** Bytes of the description field. */
export const DESCRIPTION_BYTES = 256;
