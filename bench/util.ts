/** Small helpers shared by the benchmark scenarios. */
import { spawnSync } from 'node:child_process';

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

/**
 * The environment a bench runs our command in: this one without NODE_EXTRA_CA_CERTS. When that
 * variable names a file, Node reads and parses every certificate in it while it starts, before
 * any of our code runs (measured here with Debian's bundle of about 140: `node -e 0` took 0.13 s
 * instead of 0.07 s). This machine sets it for its network proxy; a user's machine rarely does,
 * and the programs we are compared with (qemu-img, qemu-nbd, QSD) never read it. Benches that
 * time our command's start print what the variable would add (see caCertsCost).
 */
export function commandEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const { NODE_EXTRA_CA_CERTS: _unused, ...rest } = env;
  return rest;
}

/**
 * One line on what NODE_EXTRA_CA_CERTS adds to a Node process's start here (median wall time of
 * `node -e 0` with and without it, alternating), or undefined where it is not set.
 */
export function caCertsCost(runs = 7): string | undefined {
  const file = process.env.NODE_EXTRA_CA_CERTS;
  if (file === undefined || file === '') return undefined;
  const time = (env: NodeJS.ProcessEnv) => {
    const t0 = performance.now();
    spawnSync(process.execPath, ['-e', '0'], { env, stdio: 'ignore' });
    return performance.now() - t0;
  };
  const withIt: number[] = [];
  const without: number[] = [];
  for (let i = 0; i < runs; i++) {
    withIt.push(time(process.env));
    without.push(time(commandEnv()));
  }
  return `NODE_EXTRA_CA_CERTS is set here (${file}): \`node -e 0\` takes ${median(withIt).toFixed(0)} ms with it, ${median(without).toFixed(0)} ms without; our command runs without it`;
}
