import * as z from 'zod';
import type { Clock } from '../clock.js';
import { BlockError } from '../errors.js';
import { account, computeWait, configure, createState, type Direction, type ThrottleState } from './bucket.js';
import { emptyConfig, fromConfig, isEnabled, type ThrottleConfig, type ThrottleLimits, validateLimits } from './limits.js';
import { type ThrottleScheduler, ThrottledRequestQueue } from './queue.js';
import { ID_PATTERN, ID_RULE } from '../ids.js';

const DIRECTIONS: readonly Direction[] = [0, 1];

/**
 * Drives (or throttle filter nodes) sharing one set of limits (QEMU: ThrottleGroup). One
 * shared meter; members served round robin in list order (new members at the head, as in
 * QEMU); per direction a token (whose turn it is) and at most one armed timer in the group.
 */
export class ThrottleGroup implements ThrottleScheduler {
  readonly name: string;
  /** Created explicitly (kept when its last member leaves), or implicitly for a drive. */
  readonly explicit: boolean;
  private readonly clock: Clock;
  private readonly state: ThrottleState;
  private head: ThrottledRequestQueue | null = null;
  private count = 0;
  private readonly tokens: [ThrottledRequestQueue | null, ThrottledRequestQueue | null] = [null, null];
  private readonly anyTimerArmed = [false, false];
  /**
   * @internal Requests waiting in all members, per direction (kept by the members' queues): with
   * none, finding whose turn it is needs no walk of the ring (closing thousands of drives stays linear).
   */
  readonly waiting = [0, 0];
  /** Members in a drained section now (their requests bypass the limits): while none is, an armed timer decides alone. */
  private draining = 0;
  private readonly onEmpty: ((group: ThrottleGroup) => void) | undefined;

  /** @internal groups are made by the BlockLayer. */
  constructor(name: string, clock: Clock, explicit: boolean, onEmpty?: (group: ThrottleGroup) => void) {
    this.name = name;
    this.clock = clock;
    this.explicit = explicit;
    this.onEmpty = onEmpty;
    this.state = createState(emptyConfig(), clock.now());
  }

  /** Current limits (only the fields that are set). */
  getLimits(): ThrottleLimits {
    return fromConfig(this.state.config);
  }

  /** The validated configuration in force. */
  get config(): ThrottleConfig {
    return this.state.config;
  }

  /** Number of members. */
  get size(): number {
    return this.count;
  }

  /** Names of the members, in round-robin list order. */
  memberNames(): string[] {
    const out: string[] = [];
    this.forEach((m) => {
      out.push(m.name);
    });
    return out;
  }

  /**
   * Replaces the group's limits (validated with QEMU's rules). Buckets empty. Unlike QEMU's
   * qom-set, waiting requests are rescheduled at once under the new limits.
   */
  setLimits(limits: ThrottleLimits): void {
    const config = validateLimits(limits);
    configure(this.state, config, this.clock.now());
    for (const dir of DIRECTIONS) {
      this.forEach((m) => {
        const t = m.lane(dir).timer;
        if (t) {
          t.cancel();
          m.lane(dir).timer = null;
        }
      });
      this.anyTimerArmed[dir] = false;
      this.kick(dir);
    }
  }

  /** @internal The current time of the group's clock. */
  now(): number {
    return this.clock.now();
  }

  /** @internal Adds a member at the head of the list (QEMU order). */
  join(name: string): ThrottledRequestQueue {
    const m = new ThrottledRequestQueue(name, this);
    if (this.head) {
      const tail = this.head.rrPrev;
      m.rrNext = this.head;
      m.rrPrev = tail;
      tail.rrNext = m;
      this.head.rrPrev = m;
    }
    this.head = m;
    this.count++;
    for (const dir of DIRECTIONS) this.tokens[dir] ??= m;
    return m;
  }

  /** @internal Removes a member; its queues are drained first, so nothing is lost. */
  leave(m: ThrottledRequestQueue): void {
    if (m.group !== this) return;
    this.drain(m);
    // A member leaving while its limits are lifted takes its part of the group's count along.
    this.draining -= m.ioLimitsDisabled;
    m.ioLimitsDisabled = 0;
    for (const dir of DIRECTIONS) {
      const t = m.lane(dir).timer;
      if (t) {
        t.cancel();
        m.lane(dir).timer = null;
        this.anyTimerArmed[dir] = false;
      }
      if (this.tokens[dir] === m) this.tokens[dir] = m.rrNext === m ? null : m.rrNext;
    }
    if (m.rrNext === m) this.head = null;
    else {
      m.rrPrev.rrNext = m.rrNext;
      m.rrNext.rrPrev = m.rrPrev;
      if (this.head === m) this.head = m.rrNext;
    }
    m.rrNext = m.rrPrev = m;
    m.listener = null;
    this.count--;
    // Another member may have been waiting on the timer that just went away.
    for (const dir of DIRECTIONS) if (!this.anyTimerArmed[dir]) this.kick(dir);
    if (this.count === 0) this.onEmpty?.(this);
  }

  /**
   * @internal Applies new limits on behalf of member `m` (QEMU block_set_io_throttle): buckets
   * empty and `m` is restarted (its pending timer fires now, or one queued request goes).
   */
  configureFrom(m: ThrottledRequestQueue, config: ThrottleConfig): void {
    configure(this.state, config, this.clock.now());
    this.restart(m);
  }

  /** @internal Whether the group's limits are on. */
  get enabled(): boolean {
    return isEnabled(this.state.config);
  }

  /**
   * @internal The request path (QEMU throttle_group_co_io_limits_intercept): true if the
   * request goes now (charged), false if it must wait — the caller then queues it at once.
   */
  tryAdmit(m: ThrottledRequestQueue, dir: Direction, bytes: number, now?: number): boolean {
    // Nothing waiting in the group, no timer armed, no member drained: the general path below
    // reduces to "go if the buckets allow" (QEMU admits at once then), without the round-robin walk.
    if (this.waiting[dir] === 0 && !this.anyTimerArmed[dir] && this.draining === 0) {
      now ??= this.clock.now();
      if (computeWait(this.state, dir, now) === 0) {
        account(this.state, dir, bytes);
        return true;
      }
      // Must wait: the general path arms the timer (its leak to the same time changes nothing).
    }
    // A member whose limits are lifted goes at once (charged) once its own queue is empty,
    // whatever the other members wait for (QEMU lets a drained member skip the round robin).
    if (m.ioLimitsDisabled > 0 && m.lane(dir).pending === 0) {
      account(this.state, dir, bytes);
      return true;
    }
    // A timer of the group is armed and no member bypasses the limits: the request waits for
    // that timer whoever's turn it is (the general path's answer, without finding the turn,
    // which walks the ring past members with nothing queued).
    if (this.anyTimerArmed[dir] && this.draining === 0) return false;
    const t = this.nextToken(m, dir);
    const mustWait = this.scheduleTimer(t, dir, now);
    // Wait if throttled, or behind this member's earlier requests (no overtaking).
    if (mustWait || m.lane(dir).pending > 0) return false;
    account(this.state, dir, bytes);
    this.scheduleNext(m, dir);
    return true;
  }

  /** @internal tryAdmit, or a promise that resolves when the request is admitted. */
  intercept(m: ThrottledRequestQueue, dir: Direction, bytes: number, signal: AbortSignal | undefined): Promise<void> | undefined {
    if (this.tryAdmit(m, dir, bytes)) return undefined;
    return m.enqueue(dir, bytes, signal, this.clock.now());
  }

  /** @internal Flushes `m`'s queues at once, still charging the group (QEMU drained section). */
  drain(m: ThrottledRequestQueue): void {
    this.lift(m);
    this.unlift(m);
  }

  /**
   * @internal Lifts the limits for member `m` until {@link unlift} (QEMU: io_limits_disabled
   * during a drained section): its queued requests go now, new ones go at once; all are still
   * charged to the group, and the other members keep their limits. Calls nest.
   */
  lift(m: ThrottledRequestQueue): void {
    if (m.group !== this) return;
    m.ioLimitsDisabled++;
    this.draining++;
    try {
      this.restart(m);
    } catch (e) {
      this.unlift(m);
      throw e;
    }
  }

  /** @internal Ends one {@link lift} of `m`. */
  unlift(m: ThrottledRequestQueue): void {
    if (m.group !== this || m.ioLimitsDisabled === 0) return;
    m.ioLimitsDisabled--;
    this.draining--;
  }

  /** @internal A member's timer fired: wake one of its requests, or pass the turn on. */
  timerFired(m: ThrottledRequestQueue, dir: Direction): void {
    m.lane(dir).timer = null;
    this.anyTimerArmed[dir] = false;
    if (m.lane(dir).pending > 0) this.admitHead(m, dir);
    this.scheduleNext(m, dir);
  }

  /** QEMU throttle_group_restart_tgm: fire the member's pending timers now, or wake one request. */
  private restart(m: ThrottledRequestQueue): void {
    for (const dir of DIRECTIONS) {
      const t = m.lane(dir).timer;
      if (t) {
        t.cancel();
        this.timerFired(m, dir);
      } else {
        if (m.lane(dir).pending > 0) this.admitHead(m, dir);
        this.scheduleNext(m, dir);
      }
    }
  }

  /** Admits the head request of `m` without checking limits (its wait was computed for it). */
  private admitHead(m: ThrottledRequestQueue, dir: Direction): void {
    const bytes = m.dequeue(dir, this.clock.now());
    account(this.state, dir, bytes);
    m.admitDequeued();
    // After admit(): a promise waiter resumes one microtask later, and DispatchOrder must reset after that.
    m.listener?.released();
  }

  /** Whose turn it is next in `dir`: the first member after the token holder with waiting requests. */
  private nextToken(m: ThrottledRequestQueue, dir: Direction): ThrottledRequestQueue {
    if (this.waiting[dir] === 0) return m;
    if (m.lane(dir).pending > 0 && m.ioLimitsDisabled > 0) return m;
    const start = this.tokens[dir] ?? m;
    let t = start.rrNext;
    while (t !== start && t.lane(dir).pending === 0) t = t.rrNext;
    if (t === start && start.lane(dir).pending === 0) return m;
    return t;
  }

  /** True if `t` must wait in `dir`; arms `t`'s timer when no timer of the group covers it yet. */
  private scheduleTimer(t: ThrottledRequestQueue, dir: Direction, given?: number): boolean {
    if (t.ioLimitsDisabled > 0) return false;
    if (this.anyTimerArmed[dir]) return true;
    // A caller that has just read the clock passes the time: one clock read less per request.
    const now = given ?? this.clock.now();
    const wait = computeWait(this.state, dir, now);
    if (wait === 0) return false;
    const lane = t.lane(dir);
    if (lane.timer === null) lane.timer = this.clock.setTimer(now + wait, lane.onTimer);
    this.tokens[dir] = t;
    this.anyTimerArmed[dir] = true;
    return true;
  }

  /** After an admission: hand the turn to the next waiting member, or let it go now. */
  private scheduleNext(m: ThrottledRequestQueue, dir: Direction): void {
    for (;;) {
      const t = this.nextToken(m, dir);
      if (t.lane(dir).pending === 0) return;
      if (this.scheduleTimer(t, dir)) return;
      if (m.lane(dir).pending > 0) {
        // Not throttled: the current member's next request goes directly (QEMU prefers it).
        this.admitHead(m, dir);
        this.tokens[dir] = m;
        continue;
      }
      // Another member's turn: fire its timer on the next tick.
      const lane = t.lane(dir);
      if (lane.timer === null) lane.timer = this.clock.setTimer(this.clock.now(), lane.onTimer);
      this.anyTimerArmed[dir] = true;
      this.tokens[dir] = t;
      return;
    }
  }

  /** Restarts scheduling in `dir` when nothing is armed but someone may be waiting. */
  private kick(dir: Direction): void {
    if (this.anyTimerArmed[dir] || this.head === null) return;
    const from = this.tokens[dir] ?? this.head;
    this.scheduleNext(from, dir);
  }

  private forEach(fn: (m: ThrottledRequestQueue) => void): void {
    if (!this.head) return;
    let m = this.head;
    do {
      const next = m.rrNext;
      fn(m);
      m = next;
    } while (m !== this.head);
  }
}

/**
 * Name of an explicitly created group: a QEMU object id (id_wellformed), as object-add of a
 * throttle-group requires: a letter, then letters, digits, '-', '.' or '_' (ASCII).
 */
export const throttleGroupNameSchema = z
  .string({ error: 'must be a string' })
  .regex(ID_PATTERN, ID_RULE);

/** Name of an implicit group (QEMU -drive `throttling.group`, not checked as an id there): any non-empty string. */
export const implicitGroupNameSchema = z.string({ error: 'must be a string' }).min(1, 'must not be empty');

function checkName(schema: z.ZodType<string>, name: unknown): string {
  const r = schema.safeParse(name);
  if (!r.success) throw new BlockError('EINVAL', `name: ${r.error.issues[0].message}`, { field: 'name' });
  return r.data;
}

/** Named groups of one BlockLayer (QEMU's groups share one name space: implicit and explicit). */
export class ThrottleGroupRegistry {
  private readonly groups = new Map<string, ThrottleGroup>();

  constructor(private readonly clock: Clock) {}

  /** Creates an explicit group (QEMU object-add throttle-group); kept until deleted. */
  create(name: string, limits: ThrottleLimits = {}): ThrottleGroup {
    checkName(throttleGroupNameSchema, name);
    if (this.groups.has(name)) throw new BlockError('EINVAL', `group: a group named '${name}' already exists`, { field: 'group' });
    const config = validateLimits(limits);
    const g = new ThrottleGroup(name, this.clock, true, (grp) => this.dropIfImplicit(grp));
    g.setLimits(fromConfig(config));
    this.groups.set(name, g);
    return g;
  }

  /** The group with that name, if any. */
  get(name: string): ThrottleGroup | undefined {
    return this.groups.get(name);
  }

  /** The group with that name, created implicitly (removed with its last member) if absent. */
  obtain(name: string): ThrottleGroup {
    checkName(implicitGroupNameSchema, name);
    let g = this.groups.get(name);
    if (!g) {
      g = new ThrottleGroup(name, this.clock, false, (grp) => this.dropIfImplicit(grp));
      this.groups.set(name, g);
    }
    return g;
  }

  /** Deletes an explicit group that has no members. */
  delete(name: string): void {
    const g = this.groups.get(name);
    if (!g) throw new BlockError('ENOENT', `group '${name}' does not exist`, { field: 'group' });
    if (g.size > 0) throw new BlockError('EBUSY', `group '${name}' is in use by ${g.memberNames().join(', ')}`, { field: 'group' });
    this.groups.delete(name);
  }

  /** All groups. */
  list(): ThrottleGroup[] {
    return [...this.groups.values()];
  }

  private dropIfImplicit(g: ThrottleGroup): void {
    if (!g.explicit && this.groups.get(g.name) === g) this.groups.delete(g.name);
  }
}
