/** Small helpers shared by the benchmark scenarios. */

/** Median of a list of numbers. */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Formats a rate with k/M suffixes. */
export function fmtRate(v: number, unit = ''): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M${unit}`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k${unit}`;
  return `${v.toFixed(1)}${unit}`;
}

/**
 * Runs `baseline` and `subject` alternately `rounds` times; returns both medians and the ratio:
 * the median of each round's subject / baseline (`rounds`, sorted). Each round's two runs are
 * adjacent in time, so a machine that speeds up or slows down between rounds (a shared VM
 * does, by 2×) moves both sides of a round's ratio together.
 */
export async function sideBySide(
  rounds: number,
  baseline: () => Promise<number>,
  subject: () => Promise<number>,
): Promise<{ baseline: number; subject: number; ratio: number; rounds: number[] }> {
  const b: number[] = [];
  const s: number[] = [];
  for (let i = 0; i < rounds; i++) {
    // Alternate the order so neither side always runs on a warmer or cooler machine.
    if (i % 2 === 0) {
      b.push(await baseline());
      s.push(await subject());
    } else {
      s.push(await subject());
      b.push(await baseline());
    }
  }
  const ratios = s.map((x, i) => x / b[i]).sort((x, y) => x - y);
  return { baseline: median(b), subject: median(s), ratio: median(ratios), rounds: ratios };
}

/** Prints one result row; with the rounds' ratios, their range too (how far one round can be off). */
export function row(label: string, subject: string, baseline: string, ratio: number, rounds?: number[]): void {
  const spread = rounds && rounds.length > 1 ? `  (rounds ${Math.min(...rounds).toFixed(2)}–${Math.max(...rounds).toFixed(2)})` : '';
  console.log(`  ${label.padEnd(46)} ${subject.padStart(12)}  vs ${baseline.padStart(12)}  ratio ${ratio.toFixed(3)}${spread}`);
}

/** A random `bs`-aligned offset inside a file of `fileSize` bytes. */
export function randomOffset(fileSize: number, bs: number): number {
  return Math.floor(Math.random() * (fileSize / bs)) * bs;
}

/** Requests per second of `qd` workers doing `count` reads of `bs` bytes in total with `readOne` (one buffer per worker). */
export async function readRate(qd: number, count: number, bs: number, readOne: (buf: Uint8Array) => Promise<unknown>): Promise<number> {
  let issued = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: qd }, async () => {
      const buf = Buffer.allocUnsafe(bs);
      while (issued < count) {
        issued++;
        await readOne(buf);
      }
    }),
  );
  return count / ((performance.now() - t0) / 1000);
}
