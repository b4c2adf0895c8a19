// Builds differencing VHDs (disk type 4) for tests. No tool here makes them (qemu-img cannot), so
// this writes the layout of Microsoft's published "Virtual Hard Disk Image Format Specification"
// directly, independently of the driver's code: footer copy at 0, dynamic header at 512, BAT,
// parent locator data, blocks (sector bitmap, most significant bit first, then data), footer.
import fs from 'node:fs';

const SECTOR = 512;

/** One's complement of the byte sum of `b`, whose checksum field is still zero. */
function checksum(b: Buffer): number {
  let sum = 0;
  for (const x of b) sum += x;
  return ~sum >>> 0;
}

export interface Locator {
  /** 'W2ru' (UTF-16LE relative path), 'W2ku' (UTF-16LE absolute path), 'MacX' (UTF-8 file URL). */
  platform: 'W2ru' | 'W2ku' | 'MacX';
  path: string;
}

export interface DifferencingSpec {
  /** The parent VHD file (its UUID is recorded). */
  parent: string;
  /** Virtual size in bytes (a multiple of 512). */
  size: number;
  /** Block size (default 2 MiB). */
  blockSize?: number;
  /** Sectors present in the child: guest sector → its 512 bytes. */
  sectors: Map<number, Uint8Array>;
  locators: Locator[];
  /** The parent's unicode name in the header (default: none). */
  parentName?: string;
  /** Override the recorded parent UUID (default: the parent's footer UUID). */
  parentUuid?: Buffer;
}

function footer(size: number, dataOffset: bigint): Buffer {
  const f = Buffer.alloc(SECTOR);
  f.write('conectix', 0, 'latin1');
  f.writeUInt32BE(2, 8);
  f.writeUInt32BE(0x00010000, 12);
  f.writeBigUInt64BE(dataOffset, 16);
  f.write('win ', 28, 'latin1'); // Hyper-V: the size is current_size
  f.writeUInt32BE(0x000a0000, 32);
  f.write('Wi2k', 36, 'latin1');
  f.writeBigUInt64BE(BigInt(size), 40);
  f.writeBigUInt64BE(BigInt(size), 48);
  f.writeUInt16BE(65535, 56);
  f.writeUInt8(16, 58);
  f.writeUInt8(255, 59);
  f.writeUInt32BE(4, 60);
  for (let i = 0; i < 16; i++) f[68 + i] = (i * 37 + 11) & 0xff;
  f.writeUInt32BE(checksum(f), 64);
  return f;
}

const pad = (n: number) => Math.ceil(n / SECTOR) * SECTOR;

/** Writes a differencing VHD at `path` and returns its bytes' layout facts. */
export function writeDifferencingVhd(path: string, spec: DifferencingSpec): { batOffset: number; headerOffset: number } {
  const blockSize = spec.blockSize ?? 2 * 1024 * 1024;
  const perBlock = blockSize / SECTOR;
  const bitmapSize = pad(perBlock / 8);
  const entries = Math.ceil(spec.size / blockSize);
  const pf = fs.readFileSync(spec.parent);
  const parentFooter = pf.subarray(0, 8).toString('latin1') === 'conectix' ? pf.subarray(0, SECTOR) : pf.subarray(pf.length - SECTOR);
  const headerOffset = SECTOR;
  const batOffset = headerOffset + 1024;
  let at = batOffset + pad(entries * 4);
  const locatorData = spec.locators.map((l) => {
    const data = l.platform === 'MacX' ? Buffer.from(l.path, 'utf8') : Buffer.from(l.path, 'utf16le');
    const offset = at;
    at += pad(data.length);
    return { ...l, data, offset };
  });
  const blocks = new Map<number, Buffer>();
  for (const [sector, bytes] of spec.sectors) {
    const b = Math.floor(sector / perBlock);
    let block = blocks.get(b);
    if (!block) {
      block = Buffer.alloc(bitmapSize + blockSize);
      blocks.set(b, block);
    }
    const s = sector % perBlock;
    block[s >> 3] |= 0x80 >> (s & 7);
    block.set(bytes, bitmapSize + s * SECTOR);
  }
  const bat = Buffer.alloc(pad(entries * 4), 0xff);
  const blockOffsets: [number, Buffer][] = [];
  for (const [b, block] of [...blocks].sort((x, y) => x[0] - y[0])) {
    bat.writeUInt32BE(at / SECTOR, b * 4);
    blockOffsets.push([at, block]);
    at += block.length;
  }
  const h = Buffer.alloc(1024);
  h.write('cxsparse', 0, 'latin1');
  h.writeBigUInt64BE(0xffffffffffffffffn, 8);
  h.writeBigUInt64BE(BigInt(batOffset), 16);
  h.writeUInt32BE(0x00010000, 24);
  h.writeUInt32BE(entries, 28);
  h.writeUInt32BE(blockSize, 32);
  (spec.parentUuid ?? parentFooter.subarray(68, 84)).copy(h, 40);
  const name = Buffer.from(spec.parentName ?? '', 'utf16le').swap16(); // UTF-16 big-endian
  name.copy(h, 64, 0, Math.min(name.length, 510));
  locatorData.forEach((l, i) => {
    const e = 576 + 24 * i;
    h.write(l.platform, e, 'latin1');
    h.writeUInt32BE(pad(l.data.length), e + 4);
    h.writeUInt32BE(l.data.length, e + 8);
    h.writeBigUInt64BE(BigInt(l.offset), e + 16);
  });
  h.writeUInt32BE(checksum(h), 36);
  const f = footer(spec.size, BigInt(headerOffset));
  const out = Buffer.alloc(at + SECTOR);
  f.copy(out, 0);
  h.copy(out, headerOffset);
  bat.copy(out, batOffset);
  for (const l of locatorData) l.data.copy(out, l.offset);
  for (const [offset, block] of blockOffsets) block.copy(out, offset);
  f.copy(out, at);
  fs.writeFileSync(path, out);
  return { batOffset, headerOffset };
}
