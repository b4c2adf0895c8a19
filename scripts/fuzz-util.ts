import { prngU32 } from '../src/bench/prng.js';

/** The fuzzers' seeded random choices (mulberry32 underneath, as the bench's runner and soak use). */
export class Rng {
  readonly u32: () => number;
  constructor(seed: number) {
    this.u32 = prngU32(seed);
  }
  /** An integer in [0, n); 0 when n ≤ 0. */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 2 ** 32) * n);
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
}

/** `p`'s value, or 'timeout' once `ms` have passed first (the timer is cleared either way). */
export async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}
