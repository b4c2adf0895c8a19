// A filter driver that records, in order, the writes and flushes reaching the node below it:
// for tests of a format's write ordering (data flushed before the metadata that names it).
import { testFilterDriver } from './test-filter-driver.js';

export type RecordedOp = { kind: 'write'; offset: number; length: number } | { kind: 'flush' };

/** A driver named `name` and the log every node of it appends to. */
export function recordingFilter(name: string) {
  const log: RecordedOp[] = [];
  const driver = testFilterDriver(name, (f) => ({
    write: async (o, d) => {
      log.push({ kind: 'write', offset: o, length: d.length });
      await f.write(o, d, true);
    },
    flush: async () => {
      log.push({ kind: 'flush' });
      await f.flush();
    },
  }));
  return { driver, log };
}
