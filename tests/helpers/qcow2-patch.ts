import fs from 'node:fs';

/** Small surgical edits of qcow2 files, to make the leaks and corruptions the checker must find. */
export class Qcow2Patcher {
  readonly buf: Buffer;
  constructor(readonly path: string) {
    this.buf = fs.readFileSync(path);
  }
  get clusterSize(): number {
    return 2 ** this.buf.readUInt32BE(20);
  }
  get refcountBits(): number {
    return this.buf.readUInt32BE(4) === 3 ? 2 ** this.buf.readUInt32BE(96) : 16;
  }
  private u64(at: number): bigint {
    return this.buf.readBigUInt64BE(at);
  }
  /** Offset of the first L2 table (L1 entry 0). */
  l2Offset(l1Index = 0): number {
    return Number(this.u64(Number(this.u64(40)) + l1Index * 8) & 0x00fffffffffffe00n);
  }
  /** Raw L2 entry `i` of the first L2 table (standard 8-byte entries). */
  l2Entry(i: number): bigint {
    return this.u64(this.l2Offset() + i * 8);
  }
  setL2Entry(i: number, v: bigint): void {
    this.buf.writeBigUInt64BE(v, this.l2Offset() + i * 8);
  }
  /** Where the refcount of `cluster` lives (16-bit refcounts, first refcount block). */
  private refcountAt(cluster: number): number {
    if (this.refcountBits !== 16) throw new Error('patcher edits 16-bit refcounts only');
    const refblock = Number(this.u64(Number(this.u64(48))) & ~0x1ffn);
    return refblock + cluster * 2;
  }
  refcount(cluster: number): number {
    return this.buf.readUInt16BE(this.refcountAt(cluster));
  }
  setRefcount(cluster: number, v: number): void {
    this.buf.writeUInt16BE(v, this.refcountAt(cluster));
  }
  save(): void {
    fs.writeFileSync(this.path, this.buf);
  }
}

export const COPIED = 1n << 63n;
export const OFFSET_MASK = 0x00fffffffffffe00n;
