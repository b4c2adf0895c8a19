import type { BlockNode } from '../../src/index.js';
import { testProtocolDriver } from './test-protocol-driver.js';

/** A protocol driver named `existing` that hands out an already open node (to open a format over a memory node a test wrote). */
export function existingNodeDriver(node: BlockNode) {
  return testProtocolDriver('existing', node.length, {
    length: () => node.length,
    read: (o, b) => node.read(o, b),
    write: (o, d) => node.write(o, d),
    flush: () => node.flush(),
    discard: (o, l) => node.discard(o, l),
    blockStatus: (o, l) => node.blockStatus(o, l),
  });
}
