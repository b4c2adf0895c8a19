import { BlockError } from '../../errors.js';
import { AsyncLock, ClusterRangeQueue, type RangeTicket } from './async-lock.js';
import { COMPRESSED, COPIED, compressedHiWord, EXT_L2_ALLOC_BITS, EXT_L2_ZERO_BITS, entryOffset, l2EntryBytes, offsetHiWord, offsetLoWord, SUBCLUSTERS, ZERO_FLAG } from './entries.js';
import { InPlaceWrites } from './in-place-writes.js';
import { OL_ACTIVE_L1, OL_ACTIVE_L2 } from './overlap.js';
import { settleAll } from './settle.js';
import type { ClusterPlan } from './cluster-plan.js';
import type { WriterContext } from './writer-context.js';
import { l1Entry, l2EntryAt, ownedHost, releaseEntry, touchedBits } from './writer-entries.js';

const ZERO_CHUNK = 1 << 20;
const ONE_ZERO_BYTE = new Uint8Array(1);

/**
 * The qcow2 write path (QEMU qcow2-cluster.c / qcow2.c): in-place writes into clusters the
 * active table owns alone (COPIED), allocation with copy-on-write of the untouched part
 * otherwise, zero clusters, discard, and the ordered write-back of metadata on flush.
 *
 * Order of metadata on disk (what keeps a crash from corrupting the image):
 * data, then refcount blocks (+ table), then fsync, then L2 tables, then fsync, then L1, then
 * fsync, then refcount decrements for the clusters the tables stopped referencing.
 */
export class Qcow2Writer {
  private readonly lock = new AsyncLock();
  private readonly queue = new ClusterRangeQueue();
  private readonly inPlace: InPlaceWrites;
  private readonly queued = (start: number, end: number) => this.queue.overlaps(start, end);
  private readonly cs: number;
  private readonly l2Entries: number;
  private readonly entryBytes: number;
  /** Subcluster size (the cluster size without extended L2). */
  private readonly sc: number;
  private l1DirtyFirst = -1;
  private l1DirtyLast = -1;
  private started = false;
  /** Where the next compressed cluster's bytes go (0: start a new host cluster). */
  private nextByte = 0;

  constructor(private readonly c: WriterContext) {
    this.cs = c.h.clusterSize;
    this.entryBytes = l2EntryBytes(c.h.extendedL2);
    this.l2Entries = this.cs / this.entryBytes;
    this.sc = c.h.extendedL2 ? this.cs / SUBCLUSTERS : this.cs;
    this.inPlace = new InPlaceWrites(c);
  }

  /** Writes `data` at guest `offset`: at once into clusters owned alone (in-place-writes.ts), else through the queue. */
  write(offset: number, data: Uint8Array): Promise<void> {
    const host = this.started ? this.inPlace.hostNow(offset, data.length, this.queued) : -1;
    return host >= 0 ? this.inPlace.write(host, offset, data) : this.writeQueued(offset, data);
  }

  /** Through the queue: without an await before the write starts when nothing holds its clusters. */
  private writeQueued(offset: number, data: Uint8Array): Promise<void> {
    const ticket = this.admit(this.floor(offset), this.ceil(offset + data.length));
    if (ticket instanceof Promise) return ticket.then((t) => this.writeAdmitted(t, offset, data));
    return this.writeAdmitted(ticket, offset, data);
  }

  private async writeAdmitted(ticket: RangeTicket, offset: number, data: Uint8Array): Promise<void> {
    try {
      await this.writeRange(offset, data);
    } finally {
      this.queue.leave(ticket);
    }
  }

  /** Makes [offset, offset+length) read as zeros: zero flags for whole clusters (v3), zero data elsewhere. */
  async writeZeroes(offset: number, length: number): Promise<void> {
    const end = offset + length;
    const ticket = await this.admit(this.floor(offset), this.ceil(end));
    try {
      const a = this.ceil(offset);
      const b = this.floor(end);
      // v2 has no zero flag. With a raw data file, parts of clusters are written as zero data
      // (in place, or with the rest of a new cluster copied) and whole clusters are zeroed in
      // the data file as well as flagged (changeWholeClusters).
      if (this.c.h.version < 3 || a >= b) return await this.writeZeroData(offset, end);
      if (offset < a) await this.writeZeroData(offset, a);
      await this.changeWholeClusters(a, b, 'zero');
      if (b < end) await this.writeZeroData(b, end);
    } finally {
      this.queue.leave(ticket);
    }
  }

  /** Drops whole clusters (QEMU): unallocated, or zero where a backing file would show through; with a raw data file, zero clusters zeroed there too. */
  async discard(offset: number, length: number): Promise<void> {
    const a = this.ceil(offset);
    const b = this.floor(offset + length);
    if (a >= b) return;
    const ticket = await this.admit(a, b);
    try {
      await this.changeWholeClusters(a, b, 'discard');
    } finally {
      this.queue.leave(ticket);
    }
  }

  /**
   * Writes one whole guest cluster as compressed bytes (QEMU bdrv_pwrite_compressed) into a
   * cluster that holds no data. The bytes are packed after the previous compressed cluster in
   * a shared host cluster (QEMU qcow2_alloc_bytes): each compressed cluster adds one reference
   * to the host cluster(s) its sectors touch.
   */
  async writeCompressed(offset: number, bytes: Uint8Array): Promise<void> {
    const ticket = await this.admit(offset, offset + this.cs);
    try {
      const l1Index = Math.floor(offset / (this.cs * this.l2Entries));
      let host: number;
      await this.lock.acquire();
      try {
        const l2 = await this.c.cache.get(await this.ownedL2(l1Index));
        const x = l2EntryAt(this.c, l2, offset);
        if (x.hostValid || x.hi & COMPRESSED || (this.c.h.extendedL2 && x.allocBits !== 0)) {
          throw new BlockError('EINVAL', `qcow2: write-compressed: the cluster at guest offset ${offset} already holds data (compressed writes only go to empty clusters)`, {
            offset,
          });
        }
        host = await this.allocateBytes(bytes.length);
      } finally {
        this.lock.release();
      }
      try {
        await this.c.file.write(host, bytes, true);
      } catch (e) {
        this.c.refcounts.release(host, bytes.length);
        throw e;
      }
      await this.lock.acquire();
      try {
        const l2Offset = l1Entry(this.c, l1Index);
        const l2 = await this.c.cache.get(l2Offset);
        const e = (Math.floor(offset / this.cs) % this.l2Entries) * this.entryBytes;
        releaseEntry(this.c, l2, e);
        l2.writeUInt32BE(compressedHiWord(host, bytes.length, this.c.h.clusterBits), e);
        l2.writeUInt32BE(host >>> 0, e + 4);
        if (this.c.h.extendedL2) {
          l2.writeUInt32BE(0, e + EXT_L2_ZERO_BITS);
          l2.writeUInt32BE(0, e + EXT_L2_ALLOC_BITS);
        }
        this.c.cache.markDirty(l2Offset, l2);
        await this.writeBackIfFull();
      } finally {
        this.lock.release();
      }
    } finally {
      this.queue.leave(ticket);
    }
  }

  /** Under the lock: `size` (< a cluster) bytes after the last compressed cluster, in its host cluster if they fit. */
  private async allocateBytes(size: number): Promise<number> {
    const used = this.nextByte % this.cs;
    if (this.nextByte > 0 && used !== 0 && used + size <= this.cs) {
      const at = this.nextByte;
      await this.c.refcounts.increment(Math.floor(at / this.cs));
      this.nextByte += size;
      return at;
    }
    const at = await this.c.refcounts.allocate(1);
    this.nextByte = at + size;
    return at;
  }

  /** Writes every dirty table back in dependency order and syncs the file; refused once the image is marked corrupt (nothing more is written). */
  async flush(): Promise<void> {
    if (this.c.overlap.corrupt) return this.c.overlap.refused();
    await this.lock.acquire();
    try {
      await this.writeBack(true);
    } finally {
      this.lock.release();
    }
  }

  /** Runs `fn` holding the metadata lock, once every pending metadata write is on disk (persistent bitmaps allocate beside the tables). */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.c.overlap.corrupt) return this.c.overlap.refused();
    await this.lock.acquire();
    try {
      await this.writeBack(true);
      return await fn();
    } finally {
      this.lock.release();
    }
  }

  /**
   * Runs `fn` holding the metadata lock with the refcount blocks written to the file but not
   * synced: enough for what reads the refcounts back from the file (the page cache is current),
   * without the fdatasync of {@link exclusive}, which waits on the disk. Increments written ahead
   * of a sync only leak clusters on a crash, as a write-back of a full cache does.
   */
  async withRefcountsWritten<T>(fn: () => Promise<T>): Promise<T> {
    await this.lock.acquire();
    try {
      await this.c.refcounts.writeBack();
      return await fn();
    } finally {
      this.lock.release();
    }
  }

  /** {@link exclusive} with every guest request drained and held back (snapshots); clusters may be freed, so no compressed run continues. */
  async drained<T>(fn: () => Promise<T>): Promise<T> {
    const ticket = await this.admit(0, Number.MAX_SAFE_INTEGER);
    try {
      return await this.exclusive(fn);
    } finally {
      this.nextByte = 0;
      this.queue.leave(ticket);
    }
  }

  /**
   * Takes the request's place in the queue before any await (arrival order decides overlapping
   * requests), then waits its turn and for in-place writes there: the ticket at once when there
   * is nothing to wait for, else a promise of it.
   */
  private admit(start: number, end: number): RangeTicket | Promise<RangeTicket> {
    if (this.c.overlap.corrupt) return this.c.overlap.refused();
    const clear = this.inPlace.whenClear(start, end);
    const entered = this.queue.enter(start, end);
    if (clear === null && this.started && !(entered instanceof Promise)) return entered;
    return this.admitLater(clear, entered);
  }

  private async admitLater(clear: Promise<void> | null, entered: RangeTicket | Promise<RangeTicket>): Promise<RangeTicket> {
    if (clear) await clear;
    if (!this.started) {
      try {
        await this.start();
      } catch (e) {
        this.queue.leave(await entered);
        throw e;
      }
    }
    return entered;
  }

  private floor(x: number): number {
    return Math.floor(x / this.cs) * this.cs;
  }

  private ceil(x: number): number {
    return Math.ceil(x / this.cs) * this.cs;
  }

  private async start(): Promise<void> {
    if (!this.c.beforeFirstWrite) {
      this.started = true;
      return;
    }
    await this.lock.acquire();
    try {
      if (!this.started) await this.c.beforeFirstWrite();
      this.started = true;
    } finally {
      this.lock.release();
    }
  }

  private async writeZeroData(from: number, to: number): Promise<void> {
    const zeros = new Uint8Array(Math.min(ZERO_CHUNK, to - from));
    for (let pos = from; pos < to; pos += zeros.length) await this.writeRange(pos, zeros.subarray(0, Math.min(zeros.length, to - pos)));
  }

  /** Writes a range whose clusters this request owns (its queue ticket is held), one L2 table at a time. */
  private writeRange(offset: number, data: Uint8Array): Promise<void> {
    const span = this.cs * this.l2Entries;
    // Within one L2 table (the common case): the slice is the whole range.
    return offset + data.length <= (Math.floor(offset / span) + 1) * span ? this.writeSlice(offset, data) : this.writeSlices(offset, data);
  }

  private async writeSlices(offset: number, data: Uint8Array): Promise<void> {
    const span = this.cs * this.l2Entries;
    let pos = 0;
    while (pos < data.length) {
      const guest = offset + pos;
      const n = Math.min(data.length - pos, (Math.floor(guest / span) + 1) * span - guest);
      await this.writeSlice(guest, data.subarray(pos, pos + n));
      pos += n;
    }
  }

  /** Writes within one L2 table. */
  private async writeSlice(offset: number, data: Uint8Array): Promise<void> {
    let fast = this.inPlaceHostNow(offset, data.length);
    if (fast === -2) fast = await this.inPlaceHost(offset, data.length);
    if (fast >= 0) return this.inPlace.writeHost(fast, data);
    const plans = await this.plan(offset, data.length);
    const end = offset + data.length;
    // Runs of clusters contiguous on the host (in place, or new) go out as one write; the
    // common case, one run, without a list.
    let single: Promise<void> | undefined;
    let writes: Promise<void>[] | undefined;
    let linked = false;
    for (let i = 0; i < plans.length; ) {
      let j = i + 1;
      while (j < plans.length && plans[j].alloc === plans[i].alloc && plans[j].host === plans[j - 1].host + this.cs) j++;
      const from = Math.max(offset, plans[i].guest);
      const to = Math.min(end, plans[j - 1].guest + this.cs);
      const w = this.writeRun(plans[i], plans[j - 1], from, to, data.subarray(from - offset, to - offset));
      if (single === undefined) single = w;
      else if (writes === undefined) writes = [single, w];
      else writes.push(w);
      i = j;
    }
    for (const p of plans) if (p.link) linked = true;
    try {
      if (writes !== undefined) await settleAll(writes);
      else await single;
    } catch (e) {
      // Never map unwritten data: the new clusters go back (nothing references them).
      if (!this.c.externalData) for (const p of plans) if (p.alloc) this.c.refcounts.release(p.host, this.cs);
      throw e;
    }
    if (linked) await this.link(offset, plans);
  }

  /** {@link inPlaceHost} without an await: -2 when the L2 table is not cached (ask inPlaceHost). */
  private inPlaceHostNow(offset: number, length: number): number {
    const l1Index = Math.floor(offset / (this.cs * this.l2Entries));
    if (!(this.c.l1.readUInt32BE(l1Index * 8) & COPIED)) return -1;
    const l2 = this.c.cache.peek(l1Entry(this.c, l1Index));
    return l2 === undefined ? -2 : this.inPlace.hostIn(l2, offset, length);
  }

  /** {@link InPlaceWrites.hostIn} for a request holding its queue ticket (no lock needed: the ticket owns these entries). */
  private async inPlaceHost(offset: number, length: number): Promise<number> {
    const l1Index = Math.floor(offset / (this.cs * this.l2Entries));
    if (!(this.c.l1.readUInt32BE(l1Index * 8) & COPIED)) return -1;
    return this.inPlace.hostIn(await this.c.cache.get(l1Entry(this.c, l1Index)), offset, length);
  }

  /**
   * Under the lock: an L2 table owned alone, and per cluster where to write and what to copy
   * around the data: clusters owned alone are written in place (with extended L2, subclusters
   * not yet allocated get their untouched part copied); others get a new cluster, copied
   * whole (or, with extended L2 over an unallocated cluster, only the touched subclusters).
   */
  private async plan(offset: number, length: number): Promise<ClusterPlan[]> {
    // Without an await where nothing waits: the lock free, the table owned and cached.
    if (!this.lock.tryAcquire()) await this.lock.acquire();
    try {
      const l1Index = Math.floor(offset / (this.cs * this.l2Entries));
      let l2Offset = this.ownedL2Now(l1Index);
      if (l2Offset < 0) l2Offset = await this.ownedL2(l1Index);
      const l2 = this.c.cache.peek(l2Offset) ?? (await this.c.cache.get(l2Offset));
      const plans: ClusterPlan[] = [];
      const end = offset + length;
      const ext = this.c.h.extendedL2;
      let need = 0;
      for (let g = this.floor(offset); g < end; g += this.cs) {
        const from = Math.max(g, offset);
        const to = Math.min(g + this.cs, end);
        let p: ClusterPlan;
        if (!ext) {
          // Standard entries: written in place when owned alone, else into a new cluster copied whole.
          const host = ownedHost(this.c, l2, g);
          const owned = host >= 0;
          p = { guest: g, host: owned ? host : 0, alloc: !owned, fresh: false, link: !owned, cowFrom: owned ? from : g, cowTo: owned ? to : g + this.cs, allocBits: 0, zeroBits: 0 };
        } else {
          const x = l2EntryAt(this.c, l2, g);
          p = { guest: g, host: x.host, alloc: !x.owned, fresh: false, link: !x.owned, cowFrom: g, cowTo: g + this.cs, allocBits: 0, zeroBits: 0 };
          const t = touchedBits(this.sc, g, from, to);
          // A raw data file gets every new cluster whole: its untouched subclusters hold whatever
          // the data file had there, which must become what the guest reads.
          if (x.owned || (!x.hostValid && !(x.hi & COMPRESSED) && !this.c.dataRaw)) {
            // Subclusters: copy only the untouched part of touched subclusters not yet in this cluster.
            const mine = x.owned ? x.allocBits : 0;
            p.cowFrom = (mine >>> t.first) & 1 ? from : g + t.first * this.sc;
            p.cowTo = (mine >>> t.last) & 1 ? to : g + (t.last + 1) * this.sc;
            p.allocBits = (mine | t.mask) >>> 0;
            p.zeroBits = (x.zeroBits & ~t.mask) >>> 0;
            if (x.owned) p.link = p.allocBits !== x.allocBits || p.zeroBits !== x.zeroBits;
          } else p.allocBits = 0xffffffff; // a shared or compressed cluster (or one new in a raw data file) is copied whole
        }
        if (p.alloc) {
          need++;
          if (this.c.externalData) p.host = g; // the data file maps guest offsets 1:1
        }
        plans.push(p);
      }
      if (need > 0 && !this.c.externalData) {
        // One contiguous run for all new clusters of this request (QEMU allocates runs too).
        const before = this.c.refcounts.end;
        let host = this.c.refcounts.allocateNow(need);
        if (host < 0) host = await this.c.refcounts.allocate(need);
        const fresh = host >= before;
        for (const p of plans) {
          if (!p.alloc) continue;
          p.host = host;
          p.fresh = fresh;
          host += this.cs;
        }
      }
      return plans;
    } finally {
      this.lock.release();
    }
  }

  /**
   * Writes the guest data of a run of clusters (first..last) with the parts around it that must
   * be copied from the old contents (zeros, backing file, old or compressed cluster). Zero parts
   * of new clusters past the end of everything ever written are left as holes.
   */
  private async writeRun(first: ClusterPlan, last: ClusterPlan, from: number, to: number, part: Uint8Array): Promise<void> {
    let start = first.cowFrom;
    let stop = last.cowTo;
    const fresh = first.fresh && !this.c.h.extendedL2;
    if (fresh && start < from && (await this.readsZero(first.guest))) start = from;
    if (fresh && stop > to && (await this.readsZero(last.guest))) stop = to;
    const at = first.host + (start - first.guest);
    let written: Promise<void>;
    if (start === from && stop === to) written = this.inPlace.writeHost(at, part);
    else {
      const buf = new Uint8Array(stop - start);
      if (start < from) await this.c.readGuest(start, buf.subarray(0, from - start));
      if (stop > to) await this.c.readGuest(to, buf.subarray(to - start));
      buf.set(part, from - start);
      written = this.inPlace.writeHost(at, buf);
    }
    // A new cluster at the end of the file ending in a hole: extend the file over all of it
    // (qemu-img check wants every cluster inside the file).
    const clusterEnd = last.host + this.cs;
    if (first.alloc && first.fresh && stop < last.guest + this.cs && clusterEnd > this.c.data.length) {
      return settleAll([written, this.c.data.write(clusterEnd - 1, ONE_ZERO_BYTE, true)]);
    }
    return written;
  }

  /** Whether the guest cluster at `guest` reads as zeros now (unallocated without backing, or a zero cluster). */
  private async readsZero(guest: number): Promise<boolean> {
    const l1Index = Math.floor(guest / (this.cs * this.l2Entries));
    const l2Offset = l1Entry(this.c, l1Index);
    if (l2Offset === 0) return !this.c.hasBacking;
    const l2 = await this.c.cache.get(l2Offset);
    const e = (Math.floor(guest / this.cs) % this.l2Entries) * this.entryBytes;
    const hi = l2.readUInt32BE(e);
    const lo = l2.readUInt32BE(e + 4);
    if (hi & COMPRESSED) return false;
    if (this.c.h.version >= 3 && lo & ZERO_FLAG) return true;
    return !this.c.hasBacking && entryOffset(hi, lo) === 0;
  }

  /** Under the lock, once the data is written: points the L2 entries of the plans that link at the new clusters (or marks subclusters allocated) and releases the old clusters. */
  private async link(offset: number, plans: ClusterPlan[]): Promise<void> {
    if (!this.lock.tryAcquire()) await this.lock.acquire();
    try {
      const l2Offset = l1Entry(this.c, Math.floor(offset / (this.cs * this.l2Entries)));
      const l2 = this.c.cache.peek(l2Offset) ?? (await this.c.cache.get(l2Offset));
      for (const p of plans) {
        if (!p.link) continue;
        const e = (Math.floor(p.guest / this.cs) % this.l2Entries) * this.entryBytes;
        if (p.alloc) {
          releaseEntry(this.c, l2, e);
          l2.writeUInt32BE(offsetHiWord(p.host, true), e);
          l2.writeUInt32BE(offsetLoWord(p.host, false), e + 4);
        }
        if (this.c.h.extendedL2) {
          l2.writeUInt32BE(p.zeroBits, e + EXT_L2_ZERO_BITS);
          l2.writeUInt32BE(p.allocBits, e + EXT_L2_ALLOC_BITS);
        }
      }
      this.c.cache.markDirty(l2Offset, l2);
      if (this.c.cache.overfull || this.c.refcounts.overfull) await this.writeBack(false);
    } finally {
      this.lock.release();
    }
  }

  /**
   * Zero flags (writeZeroes) or unallocated/zero entries (discard) for whole clusters [from, to).
   * A raw data file is zeroed there first (QEMU's write-zeroes; a discard must read zeros too),
   * then the entries become zero clusters mapped 1:1: the data file stays the guest view across a crash.
   */
  private async changeWholeClusters(from: number, to: number, how: 'zero' | 'discard'): Promise<void> {
    const span = this.cs * this.l2Entries;
    // v2 has no zero flag: a discard there must not let the backing file show through.
    if (how === 'discard' && this.c.h.version < 3 && this.c.hasBacking) return;
    const raw = this.c.dataRaw;
    if (raw) {
      // Past the end of a short data file there is nothing to clear.
      const end = Math.min(to, this.c.data.length);
      if (end > from) await this.c.data.writeZeroes(from, end - from);
    }
    const zero = how === 'zero' || this.c.hasBacking || raw;
    const ext = this.c.h.extendedL2;
    for (let pos = from; pos < to; ) {
      const sliceEnd = Math.min(to, (Math.floor(pos / span) + 1) * span);
      await this.lock.acquire();
      try {
        const l1Index = Math.floor(pos / span);
        if (l1Entry(this.c, l1Index) === 0 && !zero) {
          pos = sliceEnd;
          continue;
        }
        const l2Offset = await this.ownedL2(l1Index);
        const l2 = await this.c.cache.get(l2Offset);
        const zeroBits = zero && ext ? 0xffffffff : 0;
        for (let g = pos; g < sliceEnd; g += this.cs) {
          const e = (Math.floor(g / this.cs) % this.l2Entries) * this.entryBytes;
          // The new entry: unallocated or zero; in a raw data file, zero and mapped 1:1.
          const hi = raw ? offsetHiWord(g, true) : 0;
          const lo = offsetLoWord(raw ? g : 0, zero && !ext);
          if (l2.readUInt32BE(e) === hi && l2.readUInt32BE(e + 4) === lo && (!ext || (l2.readUInt32BE(e + EXT_L2_ZERO_BITS) === zeroBits && l2.readUInt32BE(e + EXT_L2_ALLOC_BITS) === 0))) continue;
          releaseEntry(this.c, l2, e);
          l2.writeUInt32BE(hi, e);
          l2.writeUInt32BE(lo, e + 4);
          if (ext) {
            l2.writeUInt32BE(zeroBits, e + EXT_L2_ZERO_BITS);
            l2.writeUInt32BE(0, e + EXT_L2_ALLOC_BITS);
          }
        }
        this.c.cache.markDirty(l2Offset, l2);
        await this.writeBackIfFull();
      } finally {
        this.lock.release();
      }
      pos = sliceEnd;
    }
  }

  /** {@link ownedL2} when the active L1 owns the table already (no await), else -1. */
  private ownedL2Now(l1Index: number): number {
    const old = l1Entry(this.c, l1Index);
    return old !== 0 && this.c.l1.readUInt32BE(l1Index * 8) & COPIED ? old : -1;
  }

  /** Under the lock: the L2 table of `l1Index`, allocated (empty) or copied (shared with a snapshot) so that the active L1 owns it alone. */
  private async ownedL2(l1Index: number): Promise<number> {
    const old = l1Entry(this.c, l1Index);
    if (old !== 0 && this.c.l1.readUInt32BE(l1Index * 8) & COPIED) return old;
    const source = old !== 0 ? await this.c.cache.get(old) : undefined;
    const host = await this.c.refcounts.allocate(1);
    const table = Buffer.alloc(this.cs);
    if (source) {
      source.copy(table);
      this.c.refcounts.release(old, this.cs);
    }
    this.c.cache.markDirty(host, table);
    this.c.overlap.add(host, this.cs, OL_ACTIVE_L2);
    this.c.l1.writeUInt32BE(offsetHiWord(host, true), l1Index * 8);
    this.c.l1.writeUInt32BE(offsetLoWord(host, false), l1Index * 8 + 4);
    if (this.l1DirtyFirst < 0 || l1Index < this.l1DirtyFirst) this.l1DirtyFirst = l1Index;
    if (l1Index > this.l1DirtyLast) this.l1DirtyLast = l1Index;
    return host;
  }

  private async writeBackIfFull(): Promise<void> {
    if (this.c.cache.overfull || this.c.refcounts.overfull) await this.writeBack(false);
  }

  /** Under the lock: refcounts, sync (data durable too), L2 tables; with `full` also sync, L1, sync, then the decrements they allow, sync. */
  private async writeBack(full: boolean): Promise<void> {
    const { file, refcounts, cache, data } = this.c;
    // Data before the L2 entries that map it.
    if (data !== file) await data.flush();
    await refcounts.writeBack();
    await file.flush();
    const tables = await cache.dirtyTables();
    await settleAll(tables.map(([offset, table]) => this.c.overlap.write(file, offset, table, OL_ACTIVE_L2).then(() => cache.markClean(offset))));
    if (!full) return;
    let synced = tables.length === 0;
    if (this.l1DirtyFirst >= 0) {
      await file.flush();
      const first = this.l1DirtyFirst;
      const last = this.l1DirtyLast;
      this.l1DirtyFirst = this.l1DirtyLast = -1;
      try {
        await this.c.overlap.write(file, this.c.l1Offset + first * 8, this.c.l1.subarray(first * 8, (last + 1) * 8), OL_ACTIVE_L1);
      } catch (e) {
        if (this.l1DirtyFirst < 0 || first < this.l1DirtyFirst) this.l1DirtyFirst = first;
        if (last > this.l1DirtyLast) this.l1DirtyLast = last;
        throw e;
      }
      synced = false;
    }
    if (!synced) await file.flush();
    if (refcounts.hasReleases) {
      await refcounts.applyReleases();
      await refcounts.writeBack();
      await file.flush();
    }
  }
}
