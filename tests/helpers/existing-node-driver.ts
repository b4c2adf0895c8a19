import { z } from 'zod';
import { type BlockNode, defineDriver } from '../../src/index.js';

/** A protocol driver named `existing` that hands out an already open node (to open a format over a memory node a test wrote). */
export function existingNodeDriver(node: BlockNode) {
  return defineDriver({
    name: 'existing',
    capabilities: { kind: 'protocol' },
    schema: z.object({}).strict(),
    async open() {
      return {
        alignment: 1,
        length: () => node.length,
        read: (o, b) => node.read(o, b),
        write: (o, d) => node.write(o, d),
        flush: () => node.flush(),
        discard: (o, l) => node.discard(o, l),
        blockStatus: (o, l) => node.blockStatus(o, l),
        close: async () => {},
      };
    },
  });
}
