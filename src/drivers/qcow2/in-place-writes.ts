import { COMPRESSED, COPIED, EXT_L2_ALLOC_BITS, entryOffset, l2EntryBytes, SUBCLUSTERS, ZERO_FLAG } from './entries.js';
import type { WriterContext } from './writer-context.js';

/**
 * Writes into clusters the active tables own alone, which change no metadata (QEMU takes its
 * lock for such a write only to look up the host offset). They skip the writer's cluster range
 * queue: sequential 4 KiB writes into one 64 KiB cluster would otherwise run one at a time.
 *
 * What keeps them safe:
 * - one goes straight to the data file only when its L2 table is in the cache, no queued
 *   request (an allocation, discard, zeroing, snapshot) overlaps its clusters, and no in-place
 *   write in flight overlaps its bytes; otherwise it takes the queue as before;
 * - a queued request waits for the in-place writes overlapping its clusters that are in flight
 *   when it arrives (so a cluster is never unmapped, freed and reused under a write still
 *   landing), and later in-place writes there wait behind it in the queue;
 * - overlapping writes therefore still land in their order of arrival.
 *
 * The records of writes in flight are slots reused from a free list: no allocation per request.
 */
export class InPlaceWrites {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  /** Waiters per slot, made only when a queued request waits for that slot. */
  private readonly waiters: ((() => void)[] | undefined)[] = [];
  private readonly free: number[] = [];
  /** Slots ever made; a free slot has start = end = -1. */
  private slots = 0;
  private readonly cs: number;
  private readonly span: number;
  private readonly entryBytes: number;
  private readonly sc: number;

  constructor(private readonly c: WriterContext) {
    this.cs = c.h.clusterSize;
    this.entryBytes = l2EntryBytes(c.h.extendedL2);
    this.span = this.cs * (this.cs / this.entryBytes);
    this.sc = c.h.extendedL2 ? this.cs / SUBCLUSTERS : this.cs;
  }

  /**
   * Where [offset, offset+length) goes on the host if it can be written at once without the
   * queue (see the class comment), else -1. Synchronous: it decides in the caller's turn, before
   * any later request arrives. `queued` says whether a queued request overlaps guest [start, end).
   */
  hostNow(offset: number, length: number, queued: (start: number, end: number) => boolean): number {
    const end = offset + length;
    const l1Index = Math.floor(offset / this.span);
    if (length === 0 || Math.floor((end - 1) / this.span) !== l1Index) return -1;
    const l1 = this.c.l1;
    if (l1Index * 8 + 8 > l1.length) return -1;
    const hi1 = l1.readUInt32BE(l1Index * 8);
    if (!(hi1 & COPIED)) return -1;
    const l2Offset = entryOffset(hi1, l1.readUInt32BE(l1Index * 8 + 4));
    // An unaligned table is corrupt: the queued path says so.
    if (l2Offset === 0 || l2Offset % this.cs !== 0) return -1;
    const table = this.c.cache.peek(l2Offset);
    if (table === undefined) return -1;
    const first = offset - (offset % this.cs);
    if (queued(first, end + ((this.cs - (end % this.cs)) % this.cs))) return -1;
    if (this.overlapsInFlight(offset, end)) return -1;
    return this.hostIn(table, offset, length);
  }

  /**
   * The host offset if every cluster of [offset, offset+length) (within one L2 table) is owned
   * alone, contiguous on the host and (extended L2) allocated where it is touched, else -1.
   */
  hostIn(l2: Buffer, offset: number, length: number): number {
    const cs = this.cs;
    const end = offset + length;
    const first = offset - (offset % cs);
    const ext = this.c.h.extendedL2;
    let base = -1;
    for (let g = first; g < end; g += cs) {
      const e = (Math.floor(g / cs) % (this.span / cs)) * this.entryBytes;
      const hi = l2.readUInt32BE(e);
      const lo = l2.readUInt32BE(e + 4);
      if (!(hi & COPIED) || hi & COMPRESSED || (!ext && lo & ZERO_FLAG)) return -1;
      const host = entryOffset(hi, lo);
      // In an external data file offset 0 is a real offset (every entry there has COPIED).
      if (host === 0 && !this.c.externalData) return -1;
      // A raw data file holds each guest cluster at its guest offset: one mapped elsewhere is moved, not written in place.
      if (this.c.dataRaw && host !== g) return -1;
      if (ext) {
        const a = Math.floor((Math.max(g, offset) - g) / this.sc);
        const b = Math.floor((Math.min(g + cs, end) - 1 - g) / this.sc);
        const mask = (2 ** (b + 1) - 2 ** a) >>> 0;
        if ((l2.readUInt32BE(e + EXT_L2_ALLOC_BITS) & mask) >>> 0 !== mask) return -1;
      }
      if (base < 0) base = host;
      else if (host !== base + (g - first)) return -1;
    }
    return base + (offset - first);
  }

  /** Writes `data` at `host` for guest `offset`, recorded as in flight until it settles. */
  async write(host: number, offset: number, data: Uint8Array): Promise<void> {
    const slot = this.add(offset, offset + data.length);
    try {
      await this.writeHost(host, data);
    } finally {
      this.remove(slot);
    }
  }

  /**
   * Writes guest data at `host` of the data file, refused where the image file's metadata is
   * (QEMU's overlap check before every data write; not in an external data file).
   */
  writeHost(host: number, data: Uint8Array): Promise<void> {
    const hit = this.c.externalData ? 0 : this.c.overlap.hits(host, data.length, 0);
    return hit === 0 ? this.c.data.write(host, data, true) : this.c.overlap.refuse(hit, host, data.length);
  }

  /** Settles once every in-place write now in flight over guest [start, end) has; null when there is none. */
  whenClear(start: number, end: number): Promise<void> | null {
    let pending = 0;
    for (let i = 0; i < this.slots; i++) if (this.starts[i] < end && start < this.ends[i]) pending++;
    if (pending === 0) return null;
    return new Promise((resolve) => {
      const one = () => {
        if (--pending === 0) resolve();
      };
      for (let i = 0; i < this.slots; i++) {
        if (!(this.starts[i] < end && start < this.ends[i])) continue;
        const w = this.waiters[i];
        if (w) w.push(one);
        else this.waiters[i] = [one];
      }
    });
  }

  private overlapsInFlight(start: number, end: number): boolean {
    for (let i = 0; i < this.slots; i++) if (this.starts[i] < end && start < this.ends[i]) return true;
    return false;
  }

  private add(start: number, end: number): number {
    const slot = this.free.length > 0 ? (this.free.pop() as number) : this.slots++;
    this.starts[slot] = start;
    this.ends[slot] = end;
    return slot;
  }

  private remove(slot: number): void {
    this.starts[slot] = -1;
    this.ends[slot] = -1;
    this.free.push(slot);
    const w = this.waiters[slot];
    if (w === undefined) return;
    this.waiters[slot] = undefined;
    for (const f of w) f();
  }
}
