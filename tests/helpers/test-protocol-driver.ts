// The protocol driver most unit tests need: no options, a fixed size, and only the operations
// the test cares about; the others succeed and do nothing (reads leave the buffer as it is,
// every extent is data).
import { z } from 'zod';
import { type DriverInstance, defineDriver } from '../../src/index.js';

const done = () => Promise.resolve();

/** The driver `name` whose nodes are `size` bytes long, with `ops` over the do-nothing defaults. */
export function testProtocolDriver(name: string, size: number, ops: Partial<DriverInstance> = {}) {
  return defineDriver({
    name,
    capabilities: { kind: 'protocol' },
    schema: z.object({}).strict(),
    async open(): Promise<DriverInstance> {
      return {
        alignment: 1,
        length: () => size,
        read: done,
        write: done,
        flush: done,
        discard: done,
        blockStatus: async (offset, length) => ({ offset, length, data: true, zero: false, allocated: true, depth: 0 }),
        close: done,
        ...ops,
      };
    },
  });
}
