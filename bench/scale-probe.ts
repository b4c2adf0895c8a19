/** Runs only the throttle bench's scale scenario: `node --expose-gc --import tsx bench/scale-probe.ts [drives] [queued] [--baseline]`. */
import { FlatVirtualClock } from './baseline/flat-virtual-clock.js';
import { scale } from './throttle.js';

const [drives = 10, queued = 100_000] = process.argv.slice(2).filter((a) => !a.startsWith('--')).map(Number);
const s = await scale(drives, queued, process.argv.includes('--baseline') ? new FlatVirtualClock() : undefined);
console.log(`${drives} drives, ${queued} queued: ${s.nsPerDispatch.toFixed(0)} ns/admission wall, ${s.cpuNsPerDispatch.toFixed(0)} ns CPU, ${s.heapPerRequest.toFixed(1)} B/request`);
