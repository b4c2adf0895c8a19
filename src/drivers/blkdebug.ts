import type * as z from 'zod';
import { BlockError, type BlockErrorCode } from '../errors.js';
import { defineDriver, type DriverInstance } from '../node/driver.js';
import { type BLKDEBUG_EVENTS, blkdebugFacts, blkdebugRuleSchema } from './blkdebug-facts.js';

type Event = (typeof BLKDEBUG_EVENTS)[number];
type RuleSchema = ReturnType<typeof blkdebugRuleSchema>;

/** A rule, with its count of matching requests so far. */
interface LiveRule extends z.output<RuleSchema> {
  seen: number;
}

/**
 * Fault injection (QEMU blkdebug): passes I/O to its child and fails the requests its rules
 * match, so callers can test their error handling. Rules can be changed on the open node
 * through `info().injector`.
 */
export const blkdebugDriver = defineDriver({
  ...blkdebugFacts,
  schema: blkdebugFacts.schema(),
  async open({ options, children, nodeName }): Promise<DriverInstance> {
    const file = children.get('file')!;
    if (options.align & (options.align - 1)) {
      throw new BlockError('EINVAL', `align: ${options.align} is not a power of two`, { field: 'align', node: nodeName });
    }
    let rules: LiveRule[] = options.rules.map((r) => ({ ...r, seen: 0 }));
    const injector = {
      /** Adds a rule at run time. */
      add(rule: z.input<RuleSchema>) {
        rules.push({ ...blkdebugRuleSchema().parse(rule), seen: 0 });
      },
      /** Removes every rule. */
      clear() {
        rules = [];
      },
    };
    const check = (event: Event, offset: number, length: number) => {
      for (const r of rules) {
        if (r.event !== event && !(Array.isArray(r.event) && r.event.includes(event))) continue;
        if (r.offset !== undefined && (r.offset < offset || r.offset >= offset + Math.max(length, 1))) continue;
        if (++r.seen < r.after) continue;
        if (r.once) rules = rules.filter((x) => x !== r);
        throw new BlockError(r.code as BlockErrorCode, `blkdebug: injected ${r.code} on ${event} at offset ${offset}`, {
          node: nodeName,
          offset,
          length,
        });
      }
    };
    return {
      alignment: options.align,
      maxTransfer: options.maxTransfer,
      // Growing writes (a qcow2 allocating at the end of its file) pass to the child, which decides.
      growable: true,
      length: () => file.length,
      async read(offset, buffer) {
        check('read', offset, buffer.length);
        return file.read(offset, buffer);
      },
      async write(offset, data) {
        check('write', offset, data.length);
        return file.write(offset, data, offset + data.length > file.length);
      },
      async writeZeroes(offset, length) {
        check('write-zeroes', offset, length);
        return file.writeZeroes(offset, length);
      },
      async discard(offset, length) {
        check('discard', offset, length);
        return file.discard(offset, length);
      },
      async flush() {
        check('flush', 0, 0);
        return file.flush();
      },
      blockStatus: (offset, length) => file.blockStatus(offset, length),
      async close() {},
      info: () => ({ rules: rules.length, injector }),
    };
  },
});
