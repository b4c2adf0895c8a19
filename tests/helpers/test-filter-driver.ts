// A pass-through filter for tests that watch or hold what reaches the node below: every
// operation goes to the `file` child unchanged (writes may grow it, as under a format), except
// those the test overrides. No writeZeroes: the layer writes zero buffers, which the test sees as writes.

import * as z from 'zod';
import { type BlockNode, type DriverInstance, defineDriver } from '../../src/index.js';

/** The filter driver `name`; `ops` builds, per open node, the operations that differ from passing through to `file`. */
export function testFilterDriver(name: string, ops: (file: BlockNode) => Partial<DriverInstance>) {
  return defineDriver({
    name,
    capabilities: { kind: 'filter' },
    schema: z.object({}).strict(),
    children: { file: 'required' },
    async open({ children }): Promise<DriverInstance> {
      const file = children.get('file')!;
      return {
        alignment: 1,
        growable: true,
        length: () => file.length,
        read: (o, b) => file.read(o, b),
        write: (o, d) => file.write(o, d, true),
        flush: () => file.flush(),
        discard: (o, l) => file.discard(o, l),
        blockStatus: (o, l) => file.blockStatus(o, l),
        close: async () => {},
        ...ops(file),
      };
    },
  });
}
