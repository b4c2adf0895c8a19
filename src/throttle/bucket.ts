/**
 * Leaky-bucket arithmetic of QEMU's util/throttle.c, as pure functions over a ThrottleState.
 * Levels are doubles and waits are truncated to whole nanoseconds exactly as QEMU does, so
 * admission times match QEMU's to the nanosecond on a virtual clock.
 */
import type { ThrottleConfig } from './limits.js';

const NS_PER_S = 1e9;

/** Index of the bytes-total bucket (QEMU THROTTLE_BPS_TOTAL); the six indexes follow QEMU's BucketType order. */
export const BPS_TOTAL = 0;
/** Index of the bytes-read bucket (QEMU THROTTLE_BPS_READ). */
export const BPS_READ = 1;
/** Index of the bytes-written bucket (QEMU THROTTLE_BPS_WRITE). */
export const BPS_WRITE = 2;
/** Index of the all-requests bucket (QEMU THROTTLE_OPS_TOTAL). */
export const OPS_TOTAL = 3;
/** Index of the read-requests bucket (QEMU THROTTLE_OPS_READ). */
export const OPS_READ = 4;
/** Index of the write-requests bucket (QEMU THROTTLE_OPS_WRITE). */
export const OPS_WRITE = 5;

/** 0 = read, 1 = write (QEMU ThrottleDirection). */
export type Direction = 0 | 1;

/** Buckets that decide whether a request of a direction may go: total and own direction, bytes and ops. */
const WAIT_BUCKETS: readonly (readonly number[])[] = [
  [BPS_TOTAL, OPS_TOTAL, BPS_READ, OPS_READ],
  [BPS_TOTAL, OPS_TOTAL, BPS_WRITE, OPS_WRITE],
];

/** A group's shared meter: its configuration, the six levels and the time of the last leak. */
export interface ThrottleState {
  /** The limits the buckets apply. */
  config: ThrottleConfig;
  /** Units accumulated per bucket; leak at `avg` per second. (Plain arrays of doubles: a Float64Array's buffer would cost a group more than its six values.) */
  readonly level: number[];
  /** Units accumulated in the burst bucket (only used when burstLength > 1); leak at `max` per second. */
  readonly burstLevel: number[];
  /** Clock time (ns) of the last leak. */
  previousLeak: number;
  /**
   * Indexes of the buckets that are on (avg > 0), derived from `config`: the only ones leaked.
   * A bucket that is off never leaks, never delays and is never read, so it is not charged either.
   */
  on: number[];
  /** Per direction: the buckets that are on among the four that decide its wait (and that it charges). */
  readonly onFor: [number[], number[]];
}

/** Six zeros stored unboxed (an array filled with a fraction first holds doubles from then on). */
function sixDoubles(): number[] {
  return [0.5, 0.5, 0.5, 0.5, 0.5, 0.5].fill(0);
}

/** A new state with the given configuration and empty buckets. */
export function createState(config: ThrottleConfig, nowNs: number): ThrottleState {
  const state: ThrottleState = { config, level: sixDoubles(), burstLevel: sixDoubles(), previousLeak: nowNs, on: [], onFor: [[], []] };
  configure(state, config, nowNs);
  return state;
}

/** Applies a configuration: every bucket empties, so a change always grants a full burst again (as in QEMU). */
export function configure(state: ThrottleState, config: ThrottleConfig, nowNs: number): void {
  state.config = config;
  state.level.fill(0);
  state.burstLevel.fill(0);
  state.previousLeak = nowNs;
  const isOn = (i: number) => config.buckets[i].avg !== 0;
  // Exact-size copies: an array grown by push keeps room for 17 elements, and every group has three of them.
  const on: number[] = [];
  for (let i = 0; i < 6; i++) if (isOn(i)) on.push(i);
  state.on = on.slice();
  for (const direction of [0, 1] as const) state.onFor[direction] = WAIT_BUCKETS[direction].filter(isOn).slice();
}

/** Leaks every bucket for the time since the last leak (lazily: only when a wait is computed). */
export function leak(state: ThrottleState, nowNs: number): void {
  const delta = nowNs - state.previousLeak;
  state.previousLeak = nowNs;
  if (delta <= 0) return;
  const { buckets } = state.config;
  const on = state.on;
  for (let k = 0; k < on.length; k++) {
    const i = on[k];
    const b = buckets[i];
    state.level[i] = Math.max(state.level[i] - (b.avg * delta) / NS_PER_S, 0);
    if (b.burstLength > 1) {
      state.burstLevel[i] = Math.max(state.burstLevel[i] - (b.max * delta) / NS_PER_S, 0);
    }
  }
}

/**
 * Nanoseconds one bucket needs before another request may go (0: go now). The bucket holds
 * avg/10 units without a burst rate, max × burstLength with one; a burst bucket of max/10
 * caps the rate during a burst longer than one second.
 */
export function bucketWait(avg: number, max: number, burstLength: number, level: number, burstLevel: number): number {
  if (avg === 0) return 0;
  const size = max === 0 ? avg / 10 : max * burstLength;
  let extra = level - size;
  if (extra > 0) return Math.trunc((extra * NS_PER_S) / avg);
  if (burstLength > 1) {
    extra = burstLevel - max / 10;
    if (extra > 0) return Math.trunc((extra * NS_PER_S) / max);
  }
  return 0;
}

/** Wait (ns) for a request of `direction`: the longest of its four buckets. Does not leak. */
export function waitFor(state: ThrottleState, direction: Direction): number {
  const { buckets } = state.config;
  let wait = 0;
  const indexes = state.onFor[direction];
  for (let k = 0; k < indexes.length; k++) {
    const i = indexes[k];
    const b = buckets[i];
    const w = bucketWait(b.avg, b.max, b.burstLength, state.level[i], state.burstLevel[i]);
    if (w > wait) wait = w;
  }
  return wait;
}

/** Leaks to `nowNs`, then returns the wait for `direction` (QEMU throttle_compute_timer). */
export function computeWait(state: ThrottleState, direction: Direction, nowNs: number): number {
  leak(state, nowNs);
  return waitFor(state, direction);
}

/**
 * Charges an admitted request: its bytes to the bps buckets, one operation (or size/opSize
 * when larger than opSize) to the iops buckets. Check first, account after: the size of a
 * request never delays that request itself, only the ones after it.
 */
export function account(state: ThrottleState, direction: Direction, bytes: number): void {
  const { buckets, opSize } = state.config;
  const indexes = state.onFor[direction];
  for (let k = 0; k < indexes.length; k++) {
    const i = indexes[k];
    // bps buckets (0-2) count bytes; iops buckets one operation, or size/opSize when larger.
    const units = i < OPS_TOTAL ? bytes : opSize !== 0 && bytes > opSize ? bytes / opSize : 1;
    state.level[i] += units;
    if (buckets[i].burstLength > 1) state.burstLevel[i] += units;
  }
}
