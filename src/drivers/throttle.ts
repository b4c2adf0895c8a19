import * as z from 'zod';
import { builtOnce } from '../node/lazy-driver.js';
import { BlockError } from '../errors.js';
import { type BlockDriver, defineDriver } from '../node/driver.js';
import { DispatchOrder } from '../throttle/dispatch-order.js';
import type { ThrottleGroupRegistry } from '../throttle/group.js';

// built when first asked for: a schema costs every start, and most runs open no such node
const schema = builtOnce(() =>
  z
    .object({
      /** Name of an existing throttle group (QEMU `throttle-group`). */
      throttleGroup: z.string({ error: 'required' }).min(1, 'must not be empty'),
    })
    .strict(),
);

/** The schema of the throttle filter's own options (for the typed options of the built-in drivers). */
export type ThrottleFilterSchema = ReturnType<typeof schema>;

/**
 * The `throttle` filter (QEMU driver=throttle): a node anywhere in a graph whose I/O is
 * limited by a named group. Reads count as reads; writes, write-zeroes and discards as writes
 * (with their byte count); flush is not throttled. Filters can be stacked for nested limits.
 */
export function throttleFilterDriver(groups: ThrottleGroupRegistry): BlockDriver {
  return defineDriver({
    name: 'throttle',
    capabilities: { kind: 'filter' },
    get schema() {
      return schema();
    },
    children: { file: 'required' },
    async open({ options, children, nodeName }) {
      const group = groups.get(options.throttleGroup);
      if (!group) {
        throw new BlockError('EINVAL', `throttleGroup: throttle group '${options.throttleGroup}' does not exist`, {
          field: 'throttleGroup',
          node: nodeName,
        });
      }
      const file = children.get('file')!;
      const queue = group.join(nodeName);
      const order = new DispatchOrder();
      queue.listener = { released: () => order.released(), throttled() {}, unthrottled() {} };
      return {
        alignment: file.alignment,
        length: () => file.length,
        async read(offset, buffer) {
          const wait = queue.admit(0, buffer.length);
          if (wait !== undefined) await wait;
          else if (order.pending) await undefined;
          return file.read(offset, buffer);
        },
        async write(offset, data) {
          const wait = queue.admit(1, data.length);
          if (wait !== undefined) await wait;
          else if (order.pending) await undefined;
          return file.write(offset, data);
        },
        async writeZeroes(offset, length) {
          const wait = queue.admit(1, length);
          if (wait !== undefined) await wait;
          else if (order.pending) await undefined;
          return file.writeZeroes(offset, length);
        },
        async discard(offset, length) {
          const wait = queue.admit(1, length);
          if (wait !== undefined) await wait;
          else if (order.pending) await undefined;
          return file.discard(offset, length);
        },
        flush: () => file.flush(),
        blockStatus: (offset, length) => file.blockStatus(offset, length),
        drain: () => queue.drain(),
        drainBegin() {
          queue.lift();
          let lifted = true;
          return () => {
            if (!lifted) return;
            lifted = false;
            queue.unlift();
          };
        },
        async close() {
          group.leave(queue);
        },
      };
    },
  });
}
