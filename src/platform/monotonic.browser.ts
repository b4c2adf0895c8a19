// Browsers have no process.hrtime: performance.now() is the monotonic clock there.

// The Performance object is kept, not looked up on every call: `performance` is an accessor of
// the global scope, and reading it costs more than the now() call itself (in a Chromium worker,
// about 120 of a lookup-and-call's 210 ns). A request reads the clock twice. `now` is still
// looked up on the object at each call, so a replaced performance.now is seen.
const perf = globalThis.performance;

/** Nanoseconds since the page's time origin, rounded to an integer. */
export function monotonicNs(): number {
  return Math.round(perf.now() * 1e6);
}
