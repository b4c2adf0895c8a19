/** Named limits and constants every VHDX field is checked against (the VHDX 1.0 specification's, QEMU's where it has them). */
export const KiB = 1024;
export const MiB = 1024 * 1024;

/** "vhdxfile": the file identifier's signature at offset 0. */
export const FILE_SIGNATURE = 'vhdxfile';
/** The header section: file identifier, two headers, two region tables, all in the first MiB. */
export const HEADER_SECTION_BYTES = MiB;
/** Each structure of the header section sits in its own 64 KiB block. */
export const HEADER_BLOCK_BYTES = 64 * KiB;
export const HEADER1_OFFSET = 64 * KiB;
export const HEADER2_OFFSET = 128 * KiB;
export const REGION_TABLE_OFFSET = 192 * KiB;
export const REGION_TABLE2_OFFSET = 256 * KiB;
/** A header's checksum covers its first 4 KiB. */
export const HEADER_CRC_BYTES = 4 * KiB;
/** The bytes of a header that carry fields. */
export const HEADER_FIELD_BYTES = 80;
/** "head", "regi", "loge", "desc", "zero", "data" as little-endian u32s. */
export const HEADER_SIGNATURE = 0x64616568;
export const REGION_SIGNATURE = 0x69676572;
export const LOG_SIGNATURE = 0x65676f6c;
export const LOG_DESC_SIGNATURE = 0x63736564;
export const LOG_ZERO_SIGNATURE = 0x6f72657a;
export const LOG_DATA_SIGNATURE = 0x61746164;
/** "metadata" at the start of the metadata region. */
export const METADATA_SIGNATURE = 'metadata';
/** The only header version. */
export const HEADER_VERSION = 1;
/** The only log version. */
export const LOG_VERSION = 0;

/** Most region table entries (spec: 2047). */
export const MAX_REGION_ENTRIES = 2047;
export const REGION_ENTRY_BYTES = 32;
export const REGION_REQUIRED = 1;
/** Region offsets and lengths, the log's too, count whole MiB. */
export const REGION_ALIGN = MiB;

/** Most metadata table entries (spec: 2047), each 32 bytes after a 32-byte header, in a 64 KiB table. */
export const MAX_METADATA_ENTRIES = 2047;
export const METADATA_ENTRY_BYTES = 32;
export const METADATA_TABLE_BYTES = 64 * KiB;
/** A metadata item lies past the table and is at most 1 MiB long. */
export const MAX_METADATA_ITEM_BYTES = MiB;
export const META_IS_USER = 1;
export const META_IS_VIRTUAL_DISK = 2;
export const META_IS_REQUIRED = 4;
/** Parent locator: most key/value pairs we read (the metadata item is at most 1 MiB anyway). */
export const MAX_LOCATOR_ENTRIES = 4096;

/** File parameter flags. */
export const PARAMS_LEAVE_BLOCKS_ALLOCATED = 1;
export const PARAMS_HAS_PARENT = 2;
/** Payload block sizes: a power of two from 1 MiB to 256 MiB. */
export const MIN_BLOCK_SIZE = MiB;
export const MAX_BLOCK_SIZE = 256 * MiB;
/** Logical and physical sector sizes the spec allows. */
export const SECTOR_SIZES: readonly number[] = [512, 4096];
/** Largest virtual disk (spec and QEMU: 64 TiB). */
export const MAX_VIRTUAL_SIZE = 64 * 1024 * 1024 * MiB;
/** Sectors one sector bitmap block describes (2^23): the chunk ratio is this many sectors' worth of blocks. */
export const SECTORS_PER_BITMAP = 2 ** 23;
/**
 * Largest BAT we load (QEMU loads the whole BAT too, bounded only by its u32 region length): 256 MiB
 * covers 32 TiB of 1 MiB blocks, and 64 TiB with QEMU's automatic 64 MiB blocks past 32 TiB.
 */
export const MAX_BAT_BYTES = 256 * MiB;
export const BAT_ENTRY_BYTES = 8;

/** Payload block states (the low 3 bits of a BAT entry). */
export const PAYLOAD_BLOCK_NOT_PRESENT = 0;
export const PAYLOAD_BLOCK_UNDEFINED = 1;
export const PAYLOAD_BLOCK_ZERO = 2;
/** State 3 is an older draft's UNMAPPED (QEMU PAYLOAD_BLOCK_UNMAPPED_v095); read as unmapped. */
export const PAYLOAD_BLOCK_UNMAPPED_V095 = 3;
export const PAYLOAD_BLOCK_UNMAPPED = 5;
export const PAYLOAD_BLOCK_FULLY_PRESENT = 6;
export const PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7;
export const BAT_STATE_MASK = 7;
/** Sector bitmap block states, and a bitmap block's size (2^23 bits). */
export const SB_BLOCK_NOT_PRESENT = 0;
export const SB_BLOCK_PRESENT = 6;
export const SECTOR_BITMAP_BYTES = MiB;

/** The log is a ring of 4 KiB sectors. */
export const LOG_SECTOR_BYTES = 4 * KiB;
export const LOG_ENTRY_HEADER_BYTES = 64;
export const LOG_DESCRIPTOR_BYTES = 32;
/** A data sector carries 4084 of the 4096 bytes it restores; the descriptor holds the first 8 and last 4. */
export const LOG_DATA_PAYLOAD_BYTES = 4084;
/** Largest log (QEMU: log_size below 4 GiB, a u32). */
export const MAX_LOG_BYTES = 0xffffffff;

/** What `create` lays down (as qemu-img does). */
export const DEFAULT_LOG_SIZE = MiB;
/** The data of a new image starts this far past the end of its BAT (QEMU leaves 5 MiB: metadata and room). */
export const CREATE_DATA_GAP = 5 * MiB;
/** The metadata region of a new image. */
export const CREATE_METADATA_BYTES = MiB;

/** Known GUIDs, in their text form. */
export const BAT_GUID = '2DC27766-F623-4200-9D64-115E9BFD4A08';
export const METADATA_GUID = '8B7CA206-4790-4B9A-B8FE-575F050F886E';
export const FILE_PARAMETERS_GUID = 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B';
export const VIRTUAL_DISK_SIZE_GUID = '2FA54224-CD1B-4876-B211-5DBED83BF4B8';
export const PAGE83_GUID = 'BECA12AB-B2E6-4523-93EF-C309E000C746';
export const LOGICAL_SECTOR_SIZE_GUID = '8141BF1D-A96F-4709-BA47-F233A8FAAB5F';
export const PHYSICAL_SECTOR_SIZE_GUID = 'CDA348C7-445D-4471-9CC9-E9885251C556';
export const PARENT_LOCATOR_GUID = 'A8D35F2D-B30B-454D-ABF7-D3D84834AB0C';
/** The parent locator type of a VHDX parent. */
export const PARENT_VHDX_GUID = 'B04AEFB7-D19E-4A81-B789-25B8E9445913';
