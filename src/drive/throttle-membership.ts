// A drive's place in a throttle group (QEMU: a BlockBackend's ThrottleGroupMember and
// block_set_io_throttle): which group, the drive's queue in it, and the lifts in force.
import { BlockError } from '../errors.js';
import { parseOptions } from '../options/zod-error.js';
import type { ThrottleGroup, ThrottleGroupRegistry } from '../throttle/group.js';
import { isEnabled, type ThrottleOptions, throttleOptionsSchema, validateLimits } from '../throttle/limits.js';
import type { RequestPath } from './request-path.js';

/** A drive's limits and group, as returned by Drive.getLimits(). */
export type DriveLimits = Omit<ThrottleOptions, 'group'> & {
  /** Name of the throttle group the drive belongs to. */
  group: string;
};

/** Joins, moves and leaves a drive's throttle group; the queue itself lives on the request path. */
export class ThrottleMembership {
  /** The group the drive's queue belongs to; null while the drive has no limits. */
  group: ThrottleGroup | null = null;
  /** Lifts of the throttling in force: a queue joined meanwhile is lifted as often. */
  private lifts = 0;

  constructor(
    private readonly id: string,
    private readonly groups: ThrottleGroupRegistry,
    private readonly path: RequestPath,
  ) {}

  /** Drive.setLimits (see there); returns whether the drive's limits changed (`limits-changed` is due). */
  set(options: ThrottleOptions, rules: { maxBurstLength?: number }): boolean {
    const { group: groupName, ...limits } = parseOptions(throttleOptionsSchema, options);
    const joinOnly = groupName !== undefined && Object.keys(limits).length === 0;
    const config = joinOnly ? null : validateLimits(limits, '', rules);
    if (config !== null && !isEnabled(config)) {
      if (this.path.throttle === null) return false;
      this.leave();
      return true;
    }
    const target = groupName ?? this.group?.name ?? this.id;
    let group = this.groups.get(target);
    if (joinOnly && group === undefined) {
      throw new BlockError('EINVAL', `group: throttle group '${target}' does not exist (give limits to create it)`, {
        field: 'group',
      });
    }
    group ??= this.groups.obtain(target);
    if (this.path.throttle !== null && this.group !== group) this.leave();
    if (this.path.throttle === null) {
      const queue = group.join(this.id);
      queue.listener = this.path.queueListener;
      queue.sink = this.path;
      this.path.throttle = queue;
      this.group = group;
      for (let i = 0; i < this.lifts; i++) queue.lift();
    }
    if (config !== null) group.configureFrom(this.path.throttle, config);
    return true;
  }

  /** The drive's limits and group, or null when it is not throttled. */
  limits(): DriveLimits | null {
    if (this.group === null) return null;
    return { ...this.group.getLimits(), group: this.group.name };
  }

  /** Takes the drive out of its throttle group (its queue drains first). */
  leave(): void {
    const queue = this.path.throttle;
    const group = this.group;
    this.path.throttle = null;
    this.group = null;
    if (queue !== null) group!.leave(queue);
  }

  /** Lifts the limits of the drive's queue, now and in any group it joins, until {@link unlift}. */
  lift(): void {
    this.path.throttle?.lift();
    this.lifts++;
  }

  /** Ends one {@link lift}. */
  unlift(): void {
    this.lifts--;
    this.path.throttle?.unlift();
  }
}
