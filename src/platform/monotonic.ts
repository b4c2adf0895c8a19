// Monotonic nanoseconds for RealClock; the browser build swaps in monotonic.browser.ts.
//
// process.hrtime() is Node's cheapest monotonic read (about 60 ns here): performance.now()
// calls it and then converts to milliseconds, and rounding that back to nanoseconds costs
// more again. A request reads the clock twice (start and end), so this is on the hot path.
// `process` comes from the module, not the global: the global is a getter, called on every use.
// `hrtime` is looked up on each call, not kept: fake timers (vitest's, sinon's) replace it.
import process from 'node:process';

const originSeconds = process.hrtime()[0];

/** Nanoseconds since this module loaded (whole seconds of it): an integer far below 2^53. */
export function monotonicNs(): number {
  const t = process.hrtime();
  return (t[0] - originSeconds) * 1e9 + t[1];
}
