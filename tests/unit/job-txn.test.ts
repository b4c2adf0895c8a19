// Jobs that end as a group (QEMU's JobTxn) on a VirtualClock, for any number of jobs, sizes and
// speeds, with or without one that fails part way: nobody goes PENDING before all have
// finished their run; they are finalized newest first; when one fails, it alone reports its
// error, every other ends cancelled, and they conclude newest first.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import { BlockError } from '../../src/errors.js';
import type { Job, JobWork } from '../../src/jobs/job.js';
import { JobTxn } from '../../src/jobs/job-txn.js';
import { JobRegistry } from '../../src/jobs/registry.js';

/** Copies `pieces` pieces of 64 KiB through the speed limit; fails at piece `failAt` if given. */
function work(pieces: number, failAt: number | undefined): JobWork {
  return {
    type: 'backup',
    async run(job) {
      job.setRemaining(pieces * 65536);
      for (let i = 0; i < pieces && !job.isCancelled; i++) {
        await job.throttle(65536);
        if (job.isCancelled) break;
        if (i === failAt) throw new BlockError('EIO', 'injected');
        job.addProgress(65536);
      }
    },
  };
}

describe('JobTxn (completion-mode grouped)', () => {
  it('holds QEMU order for any jobs, with or without one failing', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ pieces: fc.integer({ min: 1, max: 8 }), speed: fc.constantFrom(0, 65536, 1 << 20) }), { minLength: 2, maxLength: 4 }),
        fc.option(fc.record({ job: fc.nat(), piece: fc.nat() }), { nil: undefined }),
        async (specs, failure) => {
          const clock = new VirtualClock();
          const registry = new JobRegistry(clock);
          const txn = new JobTxn();
          const log: string[] = [];
          const failing = failure === undefined ? -1 : failure.job % specs.length;
          const jobs: Job[] = specs.map((s, i) => {
            const failAt = i === failing ? failure!.piece % s.pieces : undefined;
            const job = registry.create(`j${i}`, work(s.pieces, failAt), { speed: s.speed });
            job.on('status-change', (st) => log.push(`j${i}:${st}`));
            job.on('completed', (err) => log.push(`j${i}:${err === undefined ? 'completed' : 'failed'}`));
            job.on('cancelled', () => log.push(`j${i}:cancelled`));
            txn.add(job);
            return job;
          });
          for (const j of jobs) j.start();
          const all = Promise.all(jobs.map((j) => j.whenConcluded()));
          for (let t = 0; t < 100 && log.filter((l) => l.endsWith(':null')).length < jobs.length; t++) await clock.advance(1000);
          await all;
          const newestFirst = jobs.map((_, i) => `j${i}`).reverse();
          const concluded = log.filter((l) => l.endsWith(':concluded')).map((l) => l.split(':')[0]);
          expect(concluded).toEqual(newestFirst);
          if (failing < 0) {
            const firstPending = log.findIndex((l) => l.endsWith(':pending'));
            expect(log.filter((l) => l.endsWith(':waiting')).length).toBe(jobs.length);
            expect(log.slice(firstPending).some((l) => l.endsWith(':waiting'))).toBe(false);
            expect(log.filter((l) => l.endsWith(':pending')).map((l) => l.split(':')[0])).toEqual(newestFirst);
            expect(log.filter((l) => l.endsWith(':completed')).length).toBe(jobs.length);
          } else {
            expect(log.filter((l) => l.endsWith(':pending'))).toEqual([]);
            expect(log.filter((l) => l.endsWith(':failed'))).toEqual([`j${failing}:failed`]);
            expect(log.filter((l) => l.endsWith(':cancelled')).length).toBe(jobs.length - 1);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
