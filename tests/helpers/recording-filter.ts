// A filter driver that records, in order, the writes and flushes reaching the node below it:
// for tests of a format's write ordering (data flushed before the metadata that names it).
import * as z from 'zod';
import { defineDriver } from '../../src/index.js';

export type RecordedOp = { kind: 'write'; offset: number; length: number } | { kind: 'flush' };

/** A driver named `name` and the log every node of it appends to. */
export function recordingFilter(name: string) {
  const log: RecordedOp[] = [];
  const driver = defineDriver({
    name,
    capabilities: { kind: 'filter' },
    schema: z.object({}).strict(),
    children: { file: 'required' },
    async open({ children }) {
      const f = children.get('file')!;
      return {
        alignment: 1,
        growable: true,
        length: () => f.length,
        read: (o, b) => f.read(o, b),
        write: async (o, d) => {
          log.push({ kind: 'write', offset: o, length: d.length });
          await f.write(o, d, true);
        },
        flush: async () => {
          log.push({ kind: 'flush' });
          await f.flush();
        },
        discard: (o, l) => f.discard(o, l),
        blockStatus: (o, l) => f.blockStatus(o, l),
        close: async () => {},
      };
    },
  });
  return { driver, log };
}
