// Runs the convert pipeline over a drive into a writer that only counts what it is given.
import type { Drive } from '../../src/index.js';
import { convertPipeline } from '../../src/tools/convert-pipeline.js';

/** The bytes the pipeline writes for `drive` with `chunk`-sized pieces, `depth` reads in flight. */
export async function countPiped(drive: Drive, chunk: number, depth: number): Promise<number> {
  let written = 0;
  await convertPipeline(
    drive,
    {
      grain: 4096,
      write: async (_offset, data) => {
        written += data.length;
      },
    },
    { chunk, depth, stop: () => {}, progress: () => {} },
  );
  return written;
}
