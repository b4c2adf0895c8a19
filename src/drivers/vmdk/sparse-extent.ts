import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import { AsyncLock } from '../qcow2/async-lock.js';
import { GrainDirectory, type GrainRun } from './grain-directory.js';
import { CompressedGrains, deflateGrain } from './compressed-grain.js';
import type { SparseHeader, SparseLayout } from './header.js';
import * as L from './limits.js';

/** Grains of a stream write deflated at once (on the thread pool) before they are appended: at 64 KiB grains, 2 MiB of input in flight. */
const STREAM_WINDOW_GRAINS = 32;
/** Bytes of a stream appended between flushes: their grain table entries are written after each (and at every flush of the node). */
const STREAM_FLUSH_BYTES = 16 * 1024 * 1024;

/** Reads what lies under an unallocated range: the backing file at guest `offset`, or zeros. */
export type Fallback = (offset: number, target: Uint8Array) => Promise<void>;

/** One hosted sparse extent: a grain directory, grain tables and grains in one file (QEMU's VMDK4 extent). */
export class SparseExtent {
  readonly grainBytes: number;
  /** The grain directory and tables: where each grain is. */
  private readonly dir: GrainDirectory;
  private readonly lock = new AsyncLock();
  private readonly compressed: CompressedGrains | undefined;

  constructor(
    readonly file: BlockNode,
    readonly header: SparseHeader,
    readonly layout: SparseLayout,
    gd: Uint32Array,
    rgd: Uint32Array | undefined,
    /** Guest offset of the extent's first byte. */
    readonly start: number,
    private readonly fallback: Fallback,
  ) {
    this.grainBytes = layout.grainBytes;
    this.dir = new GrainDirectory(file, header, layout, gd, rgd);
    this.compressed = layout.compressed ? new CompressedGrains(file, layout.grainBytes, layout.markers) : undefined;
  }

  /** The status of the run of grains from `offset` (extent-relative), at most `length` bytes, within one grain table. */
  run(offset: number, length: number): Promise<GrainRun> {
    return this.dir.run(offset, length);
  }

  get length(): number {
    return this.layout.capacityBytes;
  }

  /** Reads `buffer.length` bytes at extent offset `offset`. */
  async read(offset: number, buffer: Uint8Array): Promise<void> {
    let pos = 0;
    while (pos < buffer.length) {
      const r = await this.run(offset + pos, buffer.length - pos);
      const part = buffer.subarray(pos, pos + r.length);
      if (r.kind === 'data') await readClamped(this.file, r.host, part);
      else if (r.kind === 'zero') part.fill(0);
      else if (r.kind === 'unallocated') await this.fallback(this.start + offset + pos, part);
      else {
        const grainStart = Math.floor((offset + pos) / this.grainBytes) * this.grainBytes;
        const need = Math.min(this.grainBytes, this.length - grainStart);
        await this.compressed!.read(r.host, need, offset + pos - grainStart, part);
      }
      pos += r.length;
    }
  }

  /** Writes `data` at extent offset `offset`: into allocated grains in place, new grains at the end of the file. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.compressed) return this.appendCompressed(offset, data);
    let pos = 0;
    while (pos < data.length) {
      const at = offset + pos;
      const r = await this.run(at, data.length - pos);
      const part = data.subarray(pos, pos + r.length);
      if (r.kind === 'data') await this.file.write(r.host, part, true);
      else await this.allocateRun(at, part);
      pos += r.length;
    }
  }

  /**
   * New grains for a run of unallocated (or zeroed) grains of one grain table: all their data
   * is written, then one flush, then one write of their table entries (and redundant ones).
   * If another request allocated part of the run meanwhile, grain by grain instead.
   */
  private async allocateRun(at: number, piece: Uint8Array): Promise<void> {
    let done = false;
    await this.lock.acquire();
    try {
      const again = await this.run(at, piece.length);
      if (again.kind !== 'data' && again.length === piece.length) {
        await this.fillNewGrains(at, piece, again.kind === 'unallocated');
        done = true;
      }
    } finally {
      this.lock.release();
    }
    const gb = this.grainBytes;
    for (let pos = 0; !done && pos < piece.length; ) {
      const a = at + pos;
      const inGrain = a % gb;
      const sub = piece.subarray(pos, pos + Math.min(piece.length - pos, gb - inGrain));
      const r = await this.run(a, sub.length);
      if (r.kind === 'data') await this.file.write(r.host, sub, true);
      else await this.allocate(a - inGrain, inGrain, sub);
      pos += sub.length;
    }
  }

  /** Under the lock: consecutive new grains for [at, at + piece.length), one grain table's worth at most. */
  private async fillNewGrains(at: number, piece: Uint8Array, fromBacking: boolean): Promise<void> {
    const gb = this.grainBytes;
    const first = Math.floor(at / gb);
    const count = Math.floor((at + piece.length - 1) / gb) - first + 1;
    const gtIndex = Math.floor(first / this.layout.gtEntries);
    await this.dir.ensureTable(gtIndex);
    const sector0 = this.dir.take(count * this.header.grainSectors);
    const host0 = sector0 * L.SECTOR;
    // The grains are consecutive in the file as in the piece: the whole ones go in one write,
    // a partial first or last one is completed first.
    const head = at % gb;
    const end = at + piece.length;
    const tail = end % gb;
    let wholeFrom = 0;
    let wholeTo = piece.length;
    if (head !== 0 || (count === 1 && piece.length !== gb)) {
      const n = Math.min(piece.length, gb - head);
      await this.file.write(host0, await this.wholeGrain(first * gb, head, piece.subarray(0, n), fromBacking), true);
      wholeFrom = n;
    }
    if (tail !== 0 && wholeFrom < piece.length) {
      const lastStart = end - tail;
      await this.file.write(host0 + (lastStart - first * gb), await this.wholeGrain(lastStart, 0, piece.subarray(lastStart - at), fromBacking), true);
      wholeTo = lastStart - at;
    }
    if (wholeTo > wholeFrom) await this.file.write(host0 + (at + wholeFrom - first * gb), piece.subarray(wholeFrom, wholeTo), true);
    await this.file.flush();
    await this.dir.setEntries(gtIndex, first % this.layout.gtEntries, count, sector0, this.header.grainSectors);
  }

  /** A whole grain around `piece` (at `inGrain`): the rest from the backing file (not for a zeroed grain) or zeros. */
  private async wholeGrain(grainStart: number, inGrain: number, piece: Uint8Array, fromBacking: boolean): Promise<Uint8Array> {
    const gb = this.grainBytes;
    const grain = new Uint8Array(gb);
    if (fromBacking) await this.fallback(this.start + grainStart, grain.subarray(0, Math.min(gb, this.length - grainStart)));
    grain.set(piece, inGrain);
    return grain;
  }

  /**
   * Gives the grain at `grainStart` a home at the end of the file: the whole grain (the piece,
   * the rest from the backing file or zeros) is written and flushed before the grain table
   * entries (table and redundant table) point at it. One allocation at a time, so two writes
   * to one new grain never allocate it twice.
   */
  private async allocate(grainStart: number, inGrain: number, piece: Uint8Array): Promise<void> {
    await this.lock.acquire();
    try {
      const again = await this.run(grainStart + inGrain, piece.length);
      if (again.kind === 'data') return void (await this.file.write(again.host, piece, true));
      const gb = this.grainBytes;
      const g = grainStart / gb;
      const gtIndex = Math.floor(g / this.layout.gtEntries);
      const i = g % this.layout.gtEntries;
      await this.dir.ensureTable(gtIndex);
      const grain = piece.length === gb ? piece : await this.wholeGrain(grainStart, inGrain, piece, again.kind === 'unallocated');
      const sector = this.dir.take(this.header.grainSectors);
      await this.file.write(sector * L.SECTOR, grain, true);
      await this.file.flush();
      await this.dir.setEntries(gtIndex, i, 1, sector, 0);
    } finally {
      this.lock.release();
    }
  }

  /**
   * A stream (compressed) extent takes whole new grains only, as QEMU: each is deflated behind
   * a grain marker at the end of the file, in guest order, flushed, then named in the grain
   * table. Random writes (part of a grain, a grain written before) are refused. The grains of
   * a request deflate in parallel on the thread pool, a window of them at a time (memory stays
   * bounded); each window is appended with one write and one flush.
   */
  private async appendCompressed(offset: number, data: Uint8Array): Promise<void> {
    const gb = this.grainBytes;
    if (offset % gb !== 0 || (data.length % gb !== 0 && offset + data.length !== this.length)) throw this.refuseStream('EINVAL', offset, 'takes whole grains only (no random writes)');
    for (let pos = 0; pos < data.length; pos += STREAM_WINDOW_GRAINS * gb) {
      const end = Math.min(data.length, pos + STREAM_WINDOW_GRAINS * gb);
      const deflating: Promise<Uint8Array>[] = [];
      for (let g = pos; g < end; g += gb) deflating.push(deflateGrain(data.subarray(g, Math.min(end, g + gb))));
      // Every deflate settles before a failure is thrown: none still reads the caller's buffer.
      const settled = await Promise.allSettled(deflating);
      const packed: Uint8Array[] = [];
      for (const r of settled) {
        if (r.status === 'rejected') throw r.reason;
        packed.push(r.value);
      }
      await this.appendGrains(offset + pos, packed);
    }
  }

  private refuseStream(code: 'EINVAL' | 'EIO', offset: number, why: string): BlockError {
    return new BlockError(code, `vmdk: a streamOptimized extent ${why}`, { offset: this.start + offset, field: 'createType' });
  }

  /**
   * Under the lock: the deflated grains from extent offset `at` on, each behind its marker and
   * starting on a sector, in one write at the end of the file; one flush; then their grain
   * table entries.
   */
  private async appendGrains(at: number, packed: Uint8Array[]): Promise<void> {
    const gb = this.grainBytes;
    await this.lock.acquire();
    try {
      let sectors = 0;
      for (let k = 0; k < packed.length; k++) {
        if ((await this.run(at + k * gb, gb)).kind === 'compressed') throw this.refuseStream('EIO', at + k * gb, `cannot write grain ${at / gb + k} again (no random writes)`);
        sectors += Math.ceil((L.GRAIN_MARKER_BYTES + packed[k].length) / L.SECTOR);
      }
      const firstGrain = at / gb;
      const lastTable = Math.floor((firstGrain + packed.length - 1) / this.layout.gtEntries);
      for (let t = Math.floor(firstGrain / this.layout.gtEntries); t <= lastTable; t++) await this.dir.ensureTable(t);
      const sector0 = this.dir.take(sectors);
      const records = new Uint8Array(sectors * L.SECTOR);
      const v = new DataView(records.buffer);
      const entries = new Uint32Array(packed.length);
      let sector = sector0;
      for (let k = 0; k < packed.length; k++) {
        const from = (sector - sector0) * L.SECTOR;
        v.setBigUint64(from, BigInt((this.start + at + k * gb) / L.SECTOR), true);
        v.setUint32(from + 8, packed[k].length, true);
        records.set(packed[k], from + L.GRAIN_MARKER_BYTES);
        entries[k] = sector;
        sector += Math.ceil((L.GRAIN_MARKER_BYTES + packed[k].length) / L.SECTOR);
      }
      await this.file.write(sector0 * L.SECTOR, records, true);
      for (let k = 0; k < packed.length; ) {
        const g = firstGrain + k;
        const i = g % this.layout.gtEntries;
        const n = Math.min(packed.length - k, this.layout.gtEntries - i);
        await this.dir.stageEntries(Math.floor(g / this.layout.gtEntries), i, entries.subarray(k, k + n));
        k += n;
      }
      this.appended = true;
      this.unnamedBytes += records.length;
      if (this.unnamedBytes >= STREAM_FLUSH_BYTES) await this.nameAppended();
    } finally {
      this.lock.release();
    }
  }

  /** Bytes of grains appended since their entries were last written to the file. */
  private unnamedBytes = 0;

  /**
   * Under the lock: the appended grains made durable (one flush), then their grain table
   * entries written. An entry in the file never names a grain that is not on disk, as QEMU's
   * data-then-sync-then-table order; the flush is shared by every grain appended since the last.
   */
  private async nameAppended(): Promise<void> {
    this.unnamedBytes = 0;
    if (!this.dir.hasStaged) return;
    await this.file.flush();
    await this.dir.writeStaged();
  }

  /** Writes the entries of the grains appended so far (the node's flush then makes them durable). */
  async commitAppended(): Promise<void> {
    if (!this.dir.hasStaged) return;
    await this.lock.acquire();
    try {
      await this.nameAppended();
    } finally {
      this.lock.release();
    }
  }

  /** Grains were appended to a stream: it ends with an end-of-stream marker when closed. */
  private appended = false;

  /** Ends an appended stream with its end-of-stream marker (a zero sector), as QEMU does on close. */
  async close(): Promise<void> {
    await this.commitAppended();
    if (!this.appended) return;
    this.appended = false;
    await this.file.write(this.dir.nextSector * L.SECTOR, new Uint8Array(L.SECTOR), true);
  }

  /**
   * Makes a range read as zeros: whole grains become zeroed grains (with FLAG_ZERO_GRAIN, as
   * QEMU's zeroed_grain), the rest is written with zeros.
   */
  async writeZeroes(offset: number, length: number): Promise<void> {
    const gb = this.grainBytes;
    let pos = 0;
    while (pos < length) {
      const at = offset + pos;
      const inGrain = at % gb;
      const n = Math.min(length - pos, gb - inGrain);
      if (this.layout.zeroGrain && !this.compressed && n === gb) await this.zeroGrain(at);
      else await this.write(at, this.zeros(n));
      pos += n;
    }
  }

  private zeroBuffer = new Uint8Array(0);
  /** `n` zero bytes (one buffer of at most a grain, shared: it is never written to). */
  private zeros(n: number): Uint8Array {
    if (this.zeroBuffer.length < n) this.zeroBuffer = new Uint8Array(this.grainBytes);
    return this.zeroBuffer.subarray(0, n);
  }

  /** Points the grain at `grainStart` at no data and marks it zeroed (its old data, if any, stays unused in the file, as in QEMU). */
  private async zeroGrain(grainStart: number): Promise<void> {
    await this.lock.acquire();
    try {
      if ((await this.run(grainStart, this.grainBytes)).kind === 'zero') return;
      const g = grainStart / this.grainBytes;
      const gtIndex = Math.floor(g / this.layout.gtEntries);
      await this.dir.ensureTable(gtIndex);
      await this.dir.setEntries(gtIndex, g % this.layout.gtEntries, 1, L.GTE_ZEROED, 0);
    } finally {
      this.lock.release();
    }
  }

  /** What qemu-img info lists for this extent. */
  info(filename: string | undefined, type: string): Record<string, unknown> {
    return {
      filename,
      format: type,
      virtualSize: this.length,
      clusterSize: this.grainBytes,
      compressed: this.layout.compressed,
    };
  }
}

/** Reads exactly `target.length` bytes at `offset` of `node`, zeros past its end. */
export async function readClamped(node: BlockNode, offset: number, target: Uint8Array): Promise<void> {
  const n = Math.max(0, Math.min(target.length, node.length - offset));
  if (n > 0) await node.read(offset, target.subarray(0, n));
  if (n < target.length) target.fill(0, n);
}
