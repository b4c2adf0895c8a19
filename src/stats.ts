/** Kinds of request counted separately, as in QEMU's query-blockstats. */
export const IoKind = { Read: 0, Write: 1, Flush: 2, Unmap: 3 } as const;
/** One of {@link IoKind}'s values: the counter index of a kind of request. */
export type IoKind = (typeof IoKind)[keyof typeof IoKind];

/** Counters of one drive, named like QEMU's BlockDeviceStats (camelCase). */
export interface DriveStats {
  /** Bytes read. */
  rdBytes: number;
  /** Bytes written (write-zeroes included). */
  wrBytes: number;
  /** Bytes discarded. */
  unmapBytes: number;
  /** Reads completed. */
  rdOperations: number;
  /** Writes completed (write-zeroes included). */
  wrOperations: number;
  /** Flushes completed. */
  flushOperations: number;
  /** Discards completed. */
  unmapOperations: number;
  /** Reads that failed (QEMU failed_rd_operations). */
  failedRdOperations: number;
  /** Writes that failed. */
  failedWrOperations: number;
  /** Flushes that failed. */
  failedFlushOperations: number;
  /** Discards that failed. */
  failedUnmapOperations: number;
  /** Reads refused as invalid before they started (bad offset, length or buffer; QEMU invalid_rd_operations). */
  invalidRdOperations: number;
  /** Writes refused as invalid before they started. */
  invalidWrOperations: number;
  /** Flushes refused as invalid before they started. */
  invalidFlushOperations: number;
  /** Discards refused as invalid before they started. */
  invalidUnmapOperations: number;
  /** Time spent in reads, summed over the completed ones (ns). */
  rdTotalTimeNs: number;
  /** Time spent in writes (ns). */
  wrTotalTimeNs: number;
  /** Time spent in flushes (ns). */
  flushTotalTimeNs: number;
  /** Time spent in discards (ns). */
  unmapTotalTimeNs: number;
  /** Highest offset written so far (end of the highest write). */
  wrHighestOffset: number;
  /** Nanoseconds since the last request completed; undefined before the first one. */
  idleTimeNs?: number;
  /** Requests in flight right now (admitted or waiting). */
  inFlight: number;
}

/** Accounting of one drive: plain counters, no per-request allocation. */
export class StatsAccounting {
  private readonly bytes = [0, 0, 0, 0];
  private readonly ops = [0, 0, 0, 0];
  private readonly failed = [0, 0, 0, 0];
  private readonly invalid = [0, 0, 0, 0];
  private readonly timeNs = [0, 0, 0, 0];
  private highestWrite = 0;
  private lastDoneNs = -1;

  /** A request completed successfully. */
  done(kind: IoKind, bytes: number, startNs: number, nowNs: number): void {
    this.bytes[kind] += bytes;
    this.ops[kind]++;
    this.timeNs[kind] += nowNs - startNs;
    this.lastDoneNs = nowNs;
  }

  /** A request reached the driver and failed. */
  failedOp(kind: IoKind, startNs: number, nowNs: number): void {
    this.failed[kind]++;
    this.timeNs[kind] += nowNs - startNs;
    this.lastDoneNs = nowNs;
  }

  /** A request was refused before reaching the driver (bad offset or length). */
  invalidOp(kind: IoKind): void {
    this.invalid[kind]++;
  }

  /** A write reached `end`. */
  wrote(end: number): void {
    if (end > this.highestWrite) this.highestWrite = end;
  }

  /** The counters as {@link DriveStats}, at time `nowNs` with `inFlight` requests in flight. */
  snapshot(nowNs: number, inFlight: number): DriveStats {
    const [b, o, f, i, t] = [this.bytes, this.ops, this.failed, this.invalid, this.timeNs];
    const s: DriveStats = {
      rdBytes: b[0],
      wrBytes: b[1],
      unmapBytes: b[3],
      rdOperations: o[0],
      wrOperations: o[1],
      flushOperations: o[2],
      unmapOperations: o[3],
      failedRdOperations: f[0],
      failedWrOperations: f[1],
      failedFlushOperations: f[2],
      failedUnmapOperations: f[3],
      invalidRdOperations: i[0],
      invalidWrOperations: i[1],
      invalidFlushOperations: i[2],
      invalidUnmapOperations: i[3],
      rdTotalTimeNs: t[0],
      wrTotalTimeNs: t[1],
      flushTotalTimeNs: t[2],
      unmapTotalTimeNs: t[3],
      wrHighestOffset: this.highestWrite,
      inFlight,
    };
    if (this.lastDoneNs >= 0) s.idleTimeNs = nowNs - this.lastDoneNs;
    return s;
  }
}
