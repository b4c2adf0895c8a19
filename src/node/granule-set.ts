// A set of granule indices kept in pages of bits, created on first touch and dropped when
// empty (QEMU's HBitmap is hierarchical for the same reason): a 64 TiB disk with a few dirty
// granules costs a few pages, and an ordered walk visits only the pages that exist.

/** Granules per page (2^12): a page is 512 bytes of bits plus its population count. */
const PAGE_SHIFT = 12;
const PAGE_GRANULES = 1 << PAGE_SHIFT;
/**
 * 1 / PAGE_GRANULES, exact (a power of two): a page index is `Math.floor(g * PER_GRANULE)`.
 * A multiply, not a division: granule numbers pass 2^32, so no shift, and a float division
 * costs several times a multiply on the write path.
 */
const PER_GRANULE = 1 / PAGE_GRANULES;
const PAGE_WORDS = PAGE_GRANULES / 32;
/** The word after the bits holds how many of them are set. */
const COUNT_WORD = PAGE_WORDS;

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Bits lo..hi-1 of a 32-bit word (0 <= lo < hi <= 32). */
function mask(lo: number, hi: number): number {
  const upper = hi === 32 ? 0xffffffff : (1 << hi) - 1;
  return (upper & ~((1 << lo) - 1)) >>> 0;
}

/** Index of the lowest set bit of a non-zero word. */
function lowestBit(w: number): number {
  return 31 - Math.clz32(w & -w);
}

/** The first bit `>= start` of a page that is set (`gap` false) or clear (`gap` true), or -1. */
function firstBit(page: Uint32Array, start: number, gap: boolean): number {
  // In int32 arithmetic throughout (XOR with 0 or -1, a shifted -1 as the mask): no word becomes a double.
  const flip = gap ? -1 : 0;
  let w = start >>> 5;
  let word = (page[w]! ^ flip) & (-1 << (start & 31));
  for (;;) {
    if (word !== 0) return (w << 5) + lowestBit(word);
    if (++w === PAGE_WORDS) return -1;
    word = page[w]! ^ flip;
  }
}

/** Index of the first entry of a sorted array that is >= `key`. */
function lowerBound(sorted: readonly number[], key: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Receives the runs of {@link GranuleSet.walkRuns}, one call each. */
export interface RunSink {
  /** The run that began where the previous one ended (the first at the walk's start) ends before granule `end`; `member`: its granules are in the set. False stops the walk. */
  run(end: number, member: boolean): boolean;
}

/** A sparse set of granules `[0, size)`, with set/reset of ranges, union and an ordered walk. */
export class GranuleSet {
  private readonly pages = new Map<number, Uint32Array>();
  /** Indices of the existing pages, ascending (pages are created rarely: on first touch). */
  private readonly order: number[] = [];
  private setCount = 0;
  /** The page last looked up (writes cluster): its index, -1 for none. */
  private lastIndex = -1;
  private lastPage: Uint32Array | null = null;
  /** The first granule of that page, and how many of its granules lie inside the set (0: no page remembered). */
  private lastBase = 0;
  private lastSpan = 0;

  private sizeValue: number;
  /**
   * Bumped by every change of the members or the size (not by an add of granules already in
   * the set): a reader that saw the same value twice saw the same set (what caches of a walk's
   * result key on). Safe as an integer for 2^53 changes.
   */
  version = 0;

  /** @param size Number of granules the set ranges over. */
  constructor(size: number) {
    this.sizeValue = size;
  }

  /** Number of granules the set ranges over. */
  get size(): number {
    return this.sizeValue;
  }

  /** Changes the range to `[0, size)`: granules past a smaller size leave the set; a larger one adds none. */
  resize(size: number): void {
    this.version++;
    if (size < this.sizeValue) this.remove(size, this.sizeValue);
    this.sizeValue = size;
    // The remembered page's span inside the set depends on the size.
    this.forgetLast();
  }

  /** How many granules are in the set. */
  get count(): number {
    return this.setCount;
  }

  /** Memory held by the pages, in bytes (for figures, not accounting). */
  get pageBytes(): number {
    return this.pages.size * (PAGE_WORDS + 1) * 4;
  }

  /** Whether granule `g` is in the set. */
  has(g: number): boolean {
    const index = Math.floor(g * PER_GRANULE);
    const page = this.pageAt(index);
    if (page === undefined) return false;
    const bit = g - index * PAGE_GRANULES;
    return (page[bit >>> 5]! & (1 << (bit & 31))) !== 0;
  }

  /** Adds granules `[first, end)` (clipped to the set's size). */
  add(first: number, end: number): void {
    if (end === first + 1) {
      this.addOne(first);
      return;
    }
    end = Math.min(end, this.size);
    this.version++;
    for (let g = Math.max(0, first); g < end; ) {
      const index = Math.floor(g * PER_GRANULE);
      const pageEnd = Math.min(end, (index + 1) * PAGE_GRANULES);
      const page = this.pages.get(index) ?? this.newPage(index);
      const added = this.changeBits(page, g - index * PAGE_GRANULES, pageEnd - index * PAGE_GRANULES, true);
      page[COUNT_WORD]! += added;
      this.setCount += added;
      g = pageEnd;
    }
  }

  /**
   * Adds granule `g` (ignored outside the set): the write path's common case, a write inside one
   * granule. On the page last looked up (writes cluster) that is a subtraction, two compares and
   * one bit test, small enough to inline into the write's completion; elsewhere {@link addOneFar}.
   */
  addOne(g: number): void {
    const bit = g - this.lastBase;
    if (bit >= 0 && bit < this.lastSpan) {
      const page = this.lastPage!;
      const w = bit >>> 5;
      const old = page[w]!;
      const m = 1 << (bit & 31);
      if ((old & m) === 0) this.setBit(page, w, old | m);
      return;
    }
    this.addOneFar(g);
  }

  /** {@link addOne} off the remembered page: finds (or makes) the page and remembers it. */
  private addOneFar(g: number): void {
    if (!(g >= 0 && g < this.sizeValue)) return;
    const index = Math.floor(g * PER_GRANULE);
    const page = this.pageAt(index) ?? this.remember(index, this.newPage(index));
    const bit = g - index * PAGE_GRANULES;
    const w = bit >>> 5;
    const old = page[w]!;
    const m = 1 << (bit & 31);
    if ((old & m) === 0) this.setBit(page, w, old | m);
  }

  /** Stores `word` (one more bit than before) as word `w` of `page` and counts the bit. */
  private setBit(page: Uint32Array, w: number, word: number): void {
    page[w] = word;
    page[COUNT_WORD]!++;
    this.setCount++;
    this.version++;
  }

  private newPage(index: number): Uint32Array {
    const page = new Uint32Array(PAGE_WORDS + 1);
    this.pages.set(index, page);
    this.order.splice(lowerBound(this.order, index), 0, index);
    return page;
  }

  /** Removes granules `[first, end)`. */
  remove(first: number, end: number): void {
    end = Math.min(end, this.size);
    this.version++;
    for (let g = Math.max(0, first); g < end; ) {
      const index = Math.floor(g * PER_GRANULE);
      const pageEnd = Math.min(end, (index + 1) * PAGE_GRANULES);
      const page = this.pages.get(index);
      if (page !== undefined) {
        const removed = this.changeBits(page, g - index * PAGE_GRANULES, pageEnd - index * PAGE_GRANULES, false);
        page[COUNT_WORD]! -= removed;
        this.setCount -= removed;
        if (page[COUNT_WORD] === 0) this.dropPage(index);
      }
      g = pageEnd;
    }
  }

  /** Empties the set. */
  clear(): void {
    this.version++;
    this.forgetLast();
    this.pages.clear();
    this.order.length = 0;
    this.setCount = 0;
  }

  /** Adds every granule of `other` (same granule size; granules past this set's size are ignored). */
  unionWith(other: GranuleSet): void {
    this.version++;
    for (const index of other.order) {
      if (index * PAGE_GRANULES >= this.size) break;
      const from = other.pages.get(index)!;
      const page = this.pages.get(index) ?? this.newPage(index);
      let added = 0;
      const words = Math.min(PAGE_WORDS, Math.ceil((this.size - index * PAGE_GRANULES) / 32));
      for (let w = 0; w < words; w++) {
        let incoming = from[w]! & ~page[w]!;
        if (w === words - 1) incoming &= this.tailMask(index, w);
        if (incoming !== 0) {
          page[w] = (page[w]! | incoming) >>> 0;
          added += popcount(incoming);
        }
      }
      page[COUNT_WORD]! += added;
      this.setCount += added;
      if (page[COUNT_WORD] === 0) this.dropPage(index);
    }
  }

  /** A copy of the set (an undo point, or a frozen view). */
  clone(): GranuleSet {
    const copy = new GranuleSet(this.size);
    copy.replaceWith(this);
    return copy;
  }

  /** Makes this set equal to `other` (its pages copied; sizes must match). */
  replaceWith(other: GranuleSet): void {
    this.clear();
    for (const index of other.order) {
      this.pages.set(index, other.pages.get(index)!.slice());
      this.order.push(index);
    }
    this.setCount = other.setCount;
  }

  /**
   * The first granule `>= from` and `< limit` whose membership is `member`, or `limit` when
   * there is none.
   */
  next(from: number, member: boolean, limit = this.size): number {
    limit = Math.min(limit, this.size);
    if (from >= limit) return limit;
    return member ? this.nextMember(Math.max(0, from), limit) : this.nextGap(Math.max(0, from), limit);
  }

  /** Every run of granules in the set within `[from, limit)`, in order, as `[first, end)` pairs. */
  *runs(from = 0, limit = this.size): Generator<[number, number]> {
    limit = Math.min(limit, this.size);
    for (let g = this.next(from, true, limit); g < limit; ) {
      const end = this.next(g, false, limit);
      yield [g, end];
      g = this.next(end, true, limit);
    }
  }

  /**
   * The runs of members and non-members that make up `[from, limit)`, in order, alternating:
   * `sink.run(end, member)` for each (the last ends at `limit`, clipped to the set's size). One
   * pass over the words: the places where a bit differs from the one before it are found a word
   * at a time (bits XOR bits shifted by one), so a run costs a few operations, not a search.
   */
  walkRuns(from: number, limit: number, sink: RunSink): void {
    limit = Math.min(limit, this.sizeValue);
    let g = Math.max(0, from);
    if (!(g < limit)) return;
    let member = this.has(g);
    const order = this.order;
    // Transitions are looked for at granules after `g` (the start, then each page's first).
    while (g < limit) {
      const index = Math.floor(g * PER_GRANULE);
      const base = index * PAGE_GRANULES;
      const page = this.pages.get(index);
      if (page === undefined) {
        // A page with no members: a member run ends where it begins; a gap goes on to the next page there is.
        if (member) {
          if (!sink.run(base, true)) return;
          member = false;
        }
        const i = lowerBound(order, index + 1);
        const next = i === order.length ? limit : Math.min(limit, order[i]! * PAGE_GRANULES);
        if (next >= limit) break;
        // The next page's first granule: a transition if it is a member.
        g = next;
        if (this.has(g)) {
          if (!sink.run(g, false)) return;
          member = true;
        }
        continue;
      }
      const pageEnd = Math.min(limit, base + PAGE_GRANULES);
      // Transitions at granules in (g, pageEnd): bit i of t says granule i differs from granule i - 1.
      let w = (g - base) >>> 5;
      const lastWord = (pageEnd - 1 - base) >>> 5;
      // Bits at or below g's are no transitions of this walk.
      const skip = g - base - (w << 5) + 1;
      let low = skip === 32 ? 0 : -1 << skip;
      for (; w <= lastWord; w++) {
        const bits = page[w]! | 0;
        let t = (bits ^ ((bits << 1) | (member ? 1 : 0))) & low;
        low = -1;
        if (w === lastWord) {
          const keep = pageEnd - base - (w << 5);
          if (keep < 32) t &= (1 << keep) - 1;
        }
        while (t !== 0) {
          const end = base + (w << 5) + lowestBit(t);
          if (!sink.run(end, member)) return;
          member = !member;
          t &= t - 1;
        }
      }
      g = pageEnd;
      if (g >= limit) break;
      // The next page's first granule against the last of this one.
      const nextPage = this.pageAt(index + 1);
      const first = nextPage !== undefined && (nextPage[0]! & 1) !== 0;
      if (first !== member) {
        if (!sink.run(g, member)) return;
        member = first;
      }
    }
    sink.run(limit, member);
  }

  private nextMember(from: number, limit: number): number {
    // The page of `from` first, without a search when it is the cached one (a walk stays on a page for many runs).
    const first = Math.floor(from * PER_GRANULE);
    const page = this.pageAt(first);
    if (page !== undefined) {
      const found = firstBit(page, from - first * PAGE_GRANULES, false);
      if (found >= 0) return Math.min(limit, first * PAGE_GRANULES + found);
    }
    // Else the first bit of the next page: pages in the set are never empty.
    const i = lowerBound(this.order, first + 1);
    if (i === this.order.length) return limit;
    const index = this.order[i]!;
    const base = index * PAGE_GRANULES;
    return base >= limit ? limit : Math.min(limit, base + firstBit(this.pageAt(index)!, 0, false));
  }

  private nextGap(from: number, limit: number): number {
    for (let g = from; g < limit; ) {
      const index = Math.floor(g * PER_GRANULE);
      const base = index * PAGE_GRANULES;
      const page = this.pageAt(index);
      if (page === undefined) return g;
      const found = firstBit(page, g - base, true);
      if (found >= 0) return Math.min(limit, base + found);
      g = base + PAGE_GRANULES;
    }
    return limit;
  }

  /** The page `index`, or undefined; remembered for the next call (see {@link addOne}). */
  private pageAt(index: number): Uint32Array | undefined {
    if (index === this.lastIndex) return this.lastPage!;
    const page = this.pages.get(index);
    return page === undefined ? undefined : this.remember(index, page);
  }

  /** Remembers `page` (page `index`) as the last one looked up; returns it. */
  private remember(index: number, page: Uint32Array): Uint32Array {
    this.lastIndex = index;
    this.lastPage = page;
    this.lastBase = index * PAGE_GRANULES;
    this.lastSpan = Math.max(0, Math.min(PAGE_GRANULES, this.sizeValue - this.lastBase));
    return page;
  }

  /** Sets or clears bits `[lo, hi)` of a page; returns how many changed. */
  private changeBits(page: Uint32Array, lo: number, hi: number, on: boolean): number {
    let changed = 0;
    for (let w = lo >>> 5; w * 32 < hi; w++) {
      const m = mask(Math.max(lo - w * 32, 0), Math.min(hi - w * 32, 32));
      const old = page[w]!;
      const next = on ? (old | m) >>> 0 : (old & ~m) >>> 0;
      if (next !== old) {
        changed += popcount((next ^ old) >>> 0);
        page[w] = next;
      }
    }
    return changed;
  }

  /** Bits of word `w` of page `index` that lie inside the set's size. */
  private tailMask(index: number, w: number): number {
    const first = index * PAGE_GRANULES + w * 32;
    return first + 32 <= this.size ? 0xffffffff : mask(0, this.size - first);
  }

  private dropPage(index: number): void {
    if (index === this.lastIndex) this.forgetLast();
    this.pages.delete(index);
    this.order.splice(lowerBound(this.order, index), 1);
  }

  private forgetLast(): void {
    this.lastIndex = -1;
    this.lastPage = null;
    this.lastSpan = 0;
  }
}
