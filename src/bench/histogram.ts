/**
 * A log-linear latency histogram in the style of HdrHistogram: fixed memory (about 2 700
 * counters), values in nanoseconds up to ~2^46 (about 20 hours), relative error below 1/64
 * (1.6 %); min, max and mean are exact. No per-request arrays.
 */
const LINEAR = 128; // values below this are counted exactly
const SUB = 64; // sub-buckets per power of two above it
const MAX_EXPONENT = 40;

/** What a {@link LatencyHistogram} tells, in nanoseconds. */
export interface LatencySummary {
  /** Values recorded. */
  count: number;
  /** Smallest value (exact; 0 when empty). */
  min: number;
  /** Mean (exact). */
  mean: number;
  /** Median. */
  p50: number;
  /** 90th percentile. */
  p90: number;
  /** 99th percentile. */
  p99: number;
  /** 99.9th percentile. */
  p999: number;
  /** Largest value (exact). */
  max: number;
}

/** Latencies in nanoseconds, log-linear (HdrHistogram style): fixed memory, within 1/64 above 128 ns; min, max and mean exact. */
export class LatencyHistogram {
  /** Count per bucket: exact below 128 ns, then 64 buckets per power of two. */
  readonly counts = new Float64Array(LINEAR + SUB * MAX_EXPONENT);
  /** Values recorded. */
  count = 0;
  /** Smallest value recorded (Infinity when empty). */
  min = Number.POSITIVE_INFINITY;
  /** Largest value recorded. */
  max = 0;
  private sum = 0;

  /** Records one value (ns). */
  record(ns: number): void {
    const v = ns < 0 ? 0 : Math.round(ns);
    this.counts[LatencyHistogram.indexOf(v)]++;
    this.count++;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
  }

  /** Adds another histogram's counts. */
  merge(other: LatencyHistogram): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i] += other.counts[i];
    this.count += other.count;
    this.sum += other.sum;
    if (other.min < this.min) this.min = other.min;
    if (other.max > this.max) this.max = other.max;
  }

  /** Bucket index of a value. */
  static indexOf(v: number): number {
    if (v < LINEAR) return v;
    const e = Math.min(MAX_EXPONENT, Math.floor(Math.log2(v)) - 6); // v / 2^e in [64, 128)
    const sub = Math.min(SUB * 2 - 1, Math.floor(v / 2 ** e));
    return LINEAR + (e - 1) * SUB + (sub - SUB);
  }

  /** [lowest, highest] value a bucket stands for. */
  static rangeOf(index: number): [number, number] {
    if (index < LINEAR) return [index, index];
    const e = Math.floor((index - LINEAR) / SUB) + 1;
    const sub = ((index - LINEAR) % SUB) + SUB;
    return [sub * 2 ** e, (sub + 1) * 2 ** e - 1];
  }

  /** The value at percentile `p` (0–100): the middle of its bucket, clamped to [min, max]. */
  percentile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        const [lo, hi] = LatencyHistogram.rangeOf(i);
        return Math.min(this.max, Math.max(this.min, Math.round((lo + hi) / 2)));
      }
    }
    return this.max;
  }

  /** Count, exact min/mean/max and the percentiles of what was recorded. */
  summary(): LatencySummary {
    return {
      count: this.count,
      min: this.count ? this.min : 0,
      mean: this.count ? this.sum / this.count : 0,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      p999: this.percentile(99.9),
      max: this.max,
    };
  }

  /** Non-empty buckets as [low, high, count], for plotting. */
  buckets(): [number, number, number][] {
    const out: [number, number, number][] = [];
    for (let i = 0; i < this.counts.length; i++) if (this.counts[i] > 0) out.push([...LatencyHistogram.rangeOf(i), this.counts[i]]);
    return out;
  }
}
