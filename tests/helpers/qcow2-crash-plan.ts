/**
 * The writes of the crash test, derived from (seed, index) alone, so the parent can rebuild
 * what the killed child wrote from the indices it reported.
 */

export interface CrashChildArgs {
  image: string;
  format: 'qcow2' | 'raw';
  seed: number;
  /** Index of the first write of this child (later children continue the sequence). */
  start: number;
  /** Writes land in [0, area): small enough that they overlap and rewrite each other. */
  area: number;
  clusterSize: number;
  /** Writes issued together (Promise.all) before each flush. */
  perRound: number;
}

export interface CrashWrite {
  offset: number;
  length: number;
  /** Seed of the data bytes (patternBytes). */
  dataSeed: number;
}

/** A 32-bit integer hash (splitmix-like), so write i does not depend on writes before it. */
function mix(a: number, b: number): number {
  let x = (Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(b + 0x632be5ab, 0xc2b2ae35)) | 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * Write number `i`: 1 B .. 2 clusters, a third of them cluster-aligned, a third 512 B-aligned,
 * a third anywhere. The writes of one round never overlap (nor share a cluster): each keeps to
 * its own cluster-aligned stripe of the area, so what a flush made durable does not depend on
 * the order concurrent writes landed in (the raw driver over a file does not order them).
 */
export function crashWrite(args: Pick<CrashChildArgs, 'seed' | 'area' | 'clusterSize' | 'perRound'>, i: number): CrashWrite {
  const { seed, clusterSize, perRound } = args;
  const stripe = Math.floor(args.area / perRound / clusterSize) * clusterSize;
  const base = (i % perRound) * stripe;
  const r = (k: number) => mix(mix(seed, i), k);
  const unit = [clusterSize, 512, 1][r(1) % 3];
  const maxUnits = Math.max(1, Math.floor((2 * clusterSize) / unit));
  let length = (1 + (r(2) % maxUnits)) * unit;
  const offset = Math.floor((r(3) % stripe) / unit) * unit;
  if (offset + length > stripe) length = stripe - offset;
  return { offset: base + offset, length, dataSeed: r(4) | 0 };
}
