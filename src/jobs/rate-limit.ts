/**
 * A block job's `speed` (QEMU's RateLimit): bytes are counted in slices of 100 ms; once a
 * slice's quota is used up, the job waits until the (stretched) slice ends. Pure: the caller
 * passes the time and sleeps for the returned delay.
 */
export class RateLimit {
  /** Length of one accounting slice in nanoseconds. */
  static readonly SLICE_NS = 100_000_000;
  private quota = 0;
  private sliceStart = 0;
  private sliceEnd = -1;
  private dispatched = 0;

  /** Bytes per second; 0: no limit. */
  setSpeed(bytesPerSecond: number): void {
    this.quota = (bytesPerSecond * RateLimit.SLICE_NS) / 1e9;
  }

  /** Counts `bytes` done at `nowNs`; returns how long to wait (ns) before more work, 0 for none. */
  account(nowNs: number, bytes: number): number {
    if (this.quota === 0) return 0;
    if (this.sliceEnd < nowNs) {
      // The previous (possibly stretched) slice is over: start afresh.
      this.sliceStart = nowNs;
      this.sliceEnd = nowNs + RateLimit.SLICE_NS;
      this.dispatched = 0;
    }
    this.dispatched += bytes;
    if (this.dispatched < this.quota) return 0;
    // The slice stretches to cover what was dispatched at the quota's rate.
    this.sliceEnd = this.sliceStart + Math.floor((this.dispatched / this.quota) * RateLimit.SLICE_NS);
    return this.sliceEnd - nowNs;
  }
}
