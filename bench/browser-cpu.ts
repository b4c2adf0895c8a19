/** The browser's CPU time, for benches that drive Chromium through playwright (it starts the browser under this process). */
import fs from 'node:fs';

/** Resolution of /proc's CPU times (USER_HZ). */
export const TICK_MS = 1000 / 100;

/** CPU time (ms) of every process descending from this one: the browser's, as playwright starts it under us. */
export function childrenCpuMs(): number {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(name), Number(f[1]));
      ticks.set(Number(name), Number(f[11]) + Number(f[12]));
    } catch {
      // gone meanwhile
    }
  }
  let sum = 0;
  for (const [pid, t] of ticks) {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) {
      if (p === process.pid) {
        sum += t;
        break;
      }
    }
  }
  return sum * TICK_MS;
}
