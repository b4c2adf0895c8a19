// Browsers have no process.hrtime: performance.now() is the monotonic clock there.

/** Nanoseconds since the page's time origin, rounded to an integer. */
export function monotonicNs(): number {
  return Math.round(performance.now() * 1e6);
}
