import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import type { SparseHeader, SparseLayout } from './header.js';
import * as L from './limits.js';

/** A range of an extent with one status: `host` is where its bytes start in the extent file. */
export interface GrainRun {
  kind: 'data' | 'zero' | 'unallocated' | 'compressed';
  host: number;
  length: number;
}

/**
 * A sparse extent's grain directory and grain tables (and their redundant twins): which grain
 * is where, a bounded cache of tables, and the file's end where new grains and tables go.
 */
export class GrainDirectory {
  private readonly tables = new Map<number, Uint32Array>();
  private readonly loading = new Map<number, Promise<Uint32Array>>();
  /** Grain tables being changed: never evicted (a reload could read them stale). */
  private readonly pinned = new Set<number>();
  /** Next free sector at the end of the file (QEMU next_cluster_sector). */
  nextSector: number;

  constructor(
    private readonly file: BlockNode,
    private readonly header: SparseHeader,
    private readonly layout: SparseLayout,
    private readonly gd: Uint32Array,
    private readonly rgd: Uint32Array | undefined,
  ) {
    const g = header.grainSectors;
    this.nextSector = Math.ceil(Math.ceil(file.length / L.SECTOR) / g) * g;
  }

  /** The status of the run of grains from `offset` (extent-relative), at most `length` bytes, within one grain table. */
  async run(offset: number, length: number): Promise<GrainRun> {
    const gb = this.layout.grainBytes;
    const { gtEntries } = this.layout;
    const g = Math.floor(offset / gb);
    const gtIndex = Math.floor(g / gtEntries);
    const max = Math.min(length, this.layout.capacityBytes - offset, (gtIndex + 1) * gtEntries * gb - offset);
    if (this.gd[gtIndex] === 0) return { kind: 'unallocated', host: 0, length: max };
    const t = await this.table(gtIndex);
    const first = g % gtEntries;
    // Kinds and hosts as plain numbers while the run grows: one object per answer, none per grain.
    const kind = this.kindOf(t[first], gtIndex, first);
    const inGrain = offset - g * gb;
    const host = kind === 'data' || kind === 'compressed' ? t[first] * L.SECTOR + (kind === 'data' ? inGrain : 0) : 0;
    let len = Math.min(max, gb - inGrain);
    for (let i = first + 1; len < max && kind !== 'compressed'; i++) {
      if (this.kindOf(t[i], gtIndex, i) !== kind || (kind === 'data' && t[i] * L.SECTOR !== host + len)) break;
      len = Math.min(max, len + gb);
    }
    return { kind, host, length: len };
  }

  /** What one grain table entry means; a grain outside the file or inside the metadata is ECORRUPT. */
  private kindOf(e: number, gtIndex: number, i: number): GrainRun['kind'] {
    if (e === 0) return 'unallocated';
    if (e === L.GTE_ZEROED && this.layout.zeroGrain) return 'zero';
    const host = e * L.SECTOR;
    // Grains live after the metadata (overHead): one inside it would be read as data and, written, overwrite tables.
    const metadataEnd = Math.max(L.HEADER_BYTES, this.header.overhead * L.SECTOR);
    if (host < metadataEnd || host >= this.file.length) {
      const at = this.gd[gtIndex] * L.SECTOR + i * 4;
      throw new BlockError('ECORRUPT', `vmdk: grain table entry ${i} (byte ${at}) points at ${host}, ${host < metadataEnd ? `inside the metadata (before byte ${metadataEnd})` : `past the end of the file (${this.file.length} bytes)`}`, {
        offset: at,
        field: 'grain table entry',
      });
    }
    return this.layout.compressed ? 'compressed' : 'data';
  }

  /** The grain table of directory entry `gtIndex`, read once and kept (bounded). */
  private table(gtIndex: number): Promise<Uint32Array> {
    const at = this.gd[gtIndex] * L.SECTOR;
    const t = this.tables.get(at);
    if (t) return Promise.resolve(t);
    let p = this.loading.get(at);
    if (!p) {
      p = this.loadTable(gtIndex, at).finally(() => this.loading.delete(at));
      this.loading.set(at, p);
    }
    return p;
  }

  private async loadTable(gtIndex: number, at: number): Promise<Uint32Array> {
    const { gtBytes, gtEntries } = this.layout;
    if (at + gtBytes > this.file.length) {
      const where = this.layout.gdOffset + gtIndex * 4;
      throw new BlockError('ECORRUPT', `vmdk: grain directory entry ${gtIndex} (byte ${where}) points at a grain table past the end of the file (${at} + ${gtBytes} > ${this.file.length})`, {
        offset: where,
        field: 'grain directory entry',
      });
    }
    const b = new Uint8Array(gtBytes);
    await this.file.read(at, b);
    const v = new DataView(b.buffer);
    const t = new Uint32Array(gtEntries);
    for (let i = 0; i < gtEntries; i++) t[i] = v.getUint32(i * 4, true);
    this.remember(at, t);
    return t;
  }

  private remember(at: number, t: Uint32Array): void {
    if (this.tables.size >= L.GT_CACHE_TABLES) {
      for (const k of this.tables.keys()) {
        if (!this.pinned.has(k)) {
          this.tables.delete(k);
          break;
        }
      }
    }
    this.tables.set(at, t);
  }

  /** `n` sectors at the end of the file; refused past what 32-bit grain table entries address. */
  take(n: number): number {
    const s = this.nextSector;
    if (s + n > L.MAX_SPARSE_FILE_SECTORS) {
      throw new BlockError('EFBIG', `vmdk: the sparse extent file would grow past ${L.MAX_SPARSE_FILE_SECTORS} sectors (grain table entries are 32-bit)`, { offset: s * L.SECTOR });
    }
    this.nextSector += n;
    return s;
  }

  /** Makes sure directory entry `gtIndex` names a grain table (a new, empty one if it names none). */
  async ensureTable(gtIndex: number): Promise<void> {
    if (this.gd[gtIndex] === 0) await this.newGrainTable(gtIndex);
  }

  /** A new, empty grain table (and redundant one) for directory entry `gtIndex`: tables on disk and flushed before the directories name them. */
  private async newGrainTable(gtIndex: number): Promise<void> {
    const { gtBytes, gtEntries } = this.layout;
    const sectors = Math.ceil(gtBytes / L.SECTOR);
    const zeros = new Uint8Array(sectors * L.SECTOR);
    const gt = this.take(sectors);
    await this.file.write(gt * L.SECTOR, zeros, true);
    const rgt = this.rgd ? this.take(sectors) : 0;
    if (this.rgd) await this.file.write(rgt * L.SECTOR, zeros, true);
    await this.file.flush();
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, gt, true);
    await this.file.write(this.layout.gdOffset + gtIndex * 4, entry);
    if (this.rgd) {
      new DataView(entry.buffer).setUint32(0, rgt, true);
      await this.file.write(this.layout.rgdOffset! + gtIndex * 4, entry);
      this.rgd[gtIndex] = rgt;
    }
    this.remember(gt * L.SECTOR, new Uint32Array(gtEntries));
    this.gd[gtIndex] = gt;
  }

  /** Ranges of table entries set in memory but not yet in the file (their tables stay pinned). */
  private readonly staged: { gtIndex: number; i: number; count: number }[] = [];

  /**
   * Points entries i, i+1, … of grain table `gtIndex` at `sectors` in memory only; the file
   * gets them from {@link writeStaged}, once the caller has made their grains durable. Reads
   * see them at once.
   */
  async stageEntries(gtIndex: number, i: number, sectors: Uint32Array): Promise<void> {
    const at = this.gd[gtIndex] * L.SECTOR;
    this.pinned.add(at);
    const t = await this.table(gtIndex);
    t.set(sectors, i);
    const last = this.staged.at(-1);
    if (last && last.gtIndex === gtIndex && last.i + last.count === i) last.count += sectors.length;
    else this.staged.push({ gtIndex, i, count: sectors.length });
  }

  /** Entries staged and not yet written. */
  get hasStaged(): boolean {
    return this.staged.length > 0;
  }

  /** Writes the staged entries into the tables in the file (one write per range and table), then unpins the tables. */
  async writeStaged(): Promise<void> {
    while (this.staged.length > 0) {
      const { gtIndex, i, count } = this.staged[0];
      const at = this.gd[gtIndex] * L.SECTOR;
      const t = await this.table(gtIndex);
      await this.writeEntries(gtIndex, i, t.subarray(i, i + count));
      this.staged.shift();
      if (!this.staged.some((r) => r.gtIndex === gtIndex)) this.pinned.delete(at);
    }
  }

  /** Points entries i..i+count-1 of grain table `gtIndex` (and of its redundant twin) at `first`, `first + step`, … */
  setEntries(gtIndex: number, i: number, count: number, first: number, step: number): Promise<void> {
    const sectors = new Uint32Array(count);
    for (let k = 0; k < count; k++) sectors[k] = first + k * step;
    return this.setEntryList(gtIndex, i, sectors);
  }

  /** Points entries i, i+1, … of grain table `gtIndex` (and of its redundant twin) at `sectors` (one table's worth at most). */
  async setEntryList(gtIndex: number, i: number, sectors: Uint32Array): Promise<void> {
    const at = this.gd[gtIndex] * L.SECTOR;
    this.pinned.add(at);
    try {
      const t = await this.table(gtIndex);
      t.set(sectors, i);
      await this.writeEntries(gtIndex, i, sectors);
    } finally {
      this.pinned.delete(at);
    }
  }

  /** Writes `sectors` as entries i, i+1, … of grain table `gtIndex` and of its redundant twin, in the file. */
  private async writeEntries(gtIndex: number, i: number, sectors: Uint32Array): Promise<void> {
    const entries = new Uint8Array(sectors.length * 4);
    const v = new DataView(entries.buffer);
    for (let k = 0; k < sectors.length; k++) v.setUint32(k * 4, sectors[k], true);
    await this.file.write(this.gd[gtIndex] * L.SECTOR + i * 4, entries);
    const rgt = this.rgd?.[gtIndex] ?? 0;
    if (rgt !== 0) await this.file.write(rgt * L.SECTOR + i * 4, entries);
  }
}
