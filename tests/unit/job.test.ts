// QEMU's job state machine (job.c) on a VirtualClock: statuses and their events, verbs allowed
// per status with QEMU's message, pause points, speed, cancel, READY/complete, manual
// finalize/dismiss, and the `stop` error policy.
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import { BlockError } from '../../src/errors.js';
import type { Job, JobStatus, JobWork } from '../../src/jobs/job.js';
import { JobRegistry } from '../../src/jobs/registry.js';

/** A job that moves `total` bytes in `step`-byte pieces, through the job's speed limit. */
function copier(total: number, step: number, extra: Partial<JobWork> = {}): JobWork {
  return {
    type: 'stream',
    async run(job) {
      job.setRemaining(total);
      for (let done = 0; done < total && !job.isCancelled; done += step) {
        await job.throttle(step);
        if (job.isCancelled) break;
        job.addProgress(step);
      }
    },
    ...extra,
  };
}

function record(job: Job): { statuses: JobStatus[]; events: string[] } {
  const statuses: JobStatus[] = ['created'];
  const events: string[] = [];
  job.on('status-change', (s) => statuses.push(s));
  for (const e of ['ready', 'pending', 'cancelled'] as const) job.on(e, () => events.push(e));
  job.on('completed', (err) => events.push(err === undefined ? 'completed' : `completed: ${err}`));
  return { statuses, events };
}

const flush = async () => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

describe('Job (QEMU job.c semantics)', () => {
  it('runs through created, running, waiting, pending, concluded, null and reports completed', async () => {
    const clock = new VirtualClock();
    const jobs = new JobRegistry(clock);
    let seen: ReturnType<typeof record> | undefined;
    jobs.on('created', (j) => (seen = record(j)));
    const job = jobs.start('j1', copier(1 << 20, 1 << 16));
    await job.wait();
    expect(seen?.statuses).toEqual(['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
    expect(seen?.events).toEqual(['completed']);
    expect(job.progress).toEqual({ current: 1 << 20, total: 1 << 20 });
    expect(jobs.get('j1')).toBeUndefined();
  });

  it('refuses a malformed or taken id with QEMU messages', () => {
    const jobs = new JobRegistry(new VirtualClock());
    expect(() => jobs.start('', copier(1, 1))).toThrow("Invalid job ID ''");
    expect(() => jobs.start('1x', copier(1, 1))).toThrow("Invalid job ID '1x'");
    jobs.start('a', { type: 'stream', run: () => new Promise(() => {}) });
    expect(() => jobs.start('a', copier(1, 1))).toThrow("Job ID 'a' already in use");
  });

  it('speed: 10 MiB at 1 MiB/s takes 10 virtual seconds (within one slice)', async () => {
    const clock = new VirtualClock();
    const jobs = new JobRegistry(clock);
    const job = jobs.start('s', copier(10 << 20, 1 << 16), { speed: 1 << 20 });
    const done = job.wait();
    let finished = false;
    void done.then(() => (finished = true));
    await clock.advance(9_000);
    expect(finished).toBe(false);
    expect(job.progress.current).toBeGreaterThan(8.5 * (1 << 20));
    await clock.advance(1_200);
    await done;
    expect(clock.now()).toBeGreaterThanOrEqual(9.9e9);
  });

  it('pause stops the job at its next pause point (paused), resume continues; verbs refused where QEMU refuses them', async () => {
    const clock = new VirtualClock();
    const jobs = new JobRegistry(clock);
    const job = jobs.start('p', copier(10 << 20, 1 << 20), { speed: 1 << 20 });
    await clock.advance(1_500);
    job.pause();
    expect(() => job.pause()).toThrow('Job is already paused');
    await clock.advance(1_000);
    expect(job.status).toBe('paused');
    const at = job.progress.current;
    await clock.advance(5_000);
    expect(job.progress.current).toBe(at);
    expect(() => job.complete()).toThrow("Job 'p' in state 'paused' cannot accept command verb 'complete'");
    await expect(job.finalize()).rejects.toThrow("cannot accept command verb 'finalize'");
    job.resume();
    expect(() => job.resume()).toThrow("Can't resume a job that was not paused");
    await clock.runUntilIdle();
    await job.wait();
    expect(job.progress.current).toBe(10 << 20);
  });

  it('cancel aborts: aborting, concluded, null; cancelled event; wait() rejects ECANCELED; query error text', async () => {
    const clock = new VirtualClock();
    const jobs = new JobRegistry(clock);
    let seen: ReturnType<typeof record> | undefined;
    jobs.on('created', (j) => (seen = record(j)));
    const job = jobs.start('c', copier(10 << 20, 1 << 20), { speed: 1 << 20, autoDismiss: false });
    await clock.advance(500);
    job.cancel();
    await clock.runUntilIdle();
    await job.whenConcluded();
    expect(seen?.statuses).toEqual(['created', 'running', 'aborting', 'concluded']);
    expect(seen?.events).toEqual(['cancelled']);
    expect(job.error).toBe('Operation canceled');
    await expect(job.wait()).rejects.toMatchObject({ code: 'ECANCELED' });
    job.dismiss();
    expect(job.status).toBe('null');
  });

  it('a failing run aborts with its error (QEMU strerror wording for I/O errors)', async () => {
    const jobs = new JobRegistry(new VirtualClock());
    const job = jobs.start('f', {
      type: 'backup',
      run: async () => {
        throw new BlockError('EIO', 'read failed');
      },
    }, { autoDismiss: false });
    const events: (string | undefined)[] = [];
    job.on('completed', (e) => events.push(e));
    await job.whenConcluded();
    expect(job.status).toBe('concluded');
    expect(events).toEqual(['Input/output error']);
    expect(job.error).toBe('Input/output error');
  });

  it('manual finalize and dismiss: PENDING waits for finalize (pending event), CONCLUDED for dismiss', async () => {
    const jobs = new JobRegistry(new VirtualClock());
    const order: string[] = [];
    const job = jobs.start('m', copier(4, 1, { prepare: async () => void order.push('prepare'), commit: () => void order.push('commit'), clean: () => void order.push('clean') }), {
      autoFinalize: false,
      autoDismiss: false,
    });
    const ev = record(job);
    await flush();
    expect(job.status).toBe('pending');
    expect(ev.events).toEqual(['pending']);
    expect(() => job.dismiss()).toThrow("Job 'm' in state 'pending' cannot accept command verb 'dismiss'");
    await job.finalize();
    expect(order).toEqual(['prepare', 'commit', 'clean']);
    expect(job.status).toBe('concluded');
    job.dismiss();
    expect(job.status).toBe('null');
    expect(jobs.list()).toEqual([]);
  });

  it('a cancel or a second finalize while the job finalizes changes nothing: the job ends once, completed (found by the serve fuzzer: it quit the server)', async () => {
    const jobs = new JobRegistry(new VirtualClock());
    const order: string[] = [];
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    const prepare = async () => {
      order.push('prepare');
      await held;
    };
    const work = copier(4, 1, { prepare, commit: () => void order.push('commit'), abort: () => void order.push('abort'), clean: () => void order.push('clean') });
    let ev: ReturnType<typeof record> = { statuses: [], events: [] };
    jobs.on('created', (j) => (ev = record(j)));
    const job = jobs.start('f', work, { autoDismiss: false });
    await flush();
    expect(job.status).toBe('pending');
    expect(order).toEqual(['prepare']);
    job.cancel();
    job.cancel(true);
    release();
    await job.wait();
    expect(order).toEqual(['prepare', 'commit', 'clean']);
    expect(ev.statuses).toEqual(['created', 'running', 'waiting', 'pending', 'concluded']);
    expect(ev.events).toEqual(['completed']);

    const manual: string[] = [];
    let go = () => {};
    const gate = new Promise<void>((r) => (go = r));
    const m = jobs.start('g', copier(4, 1, { prepare: () => gate, commit: () => void manual.push('commit'), clean: () => void manual.push('clean') }), { autoFinalize: false });
    await flush();
    expect(m.status).toBe('pending');
    const first = m.finalize();
    const second = m.finalize();
    go();
    await Promise.all([first, second]);
    expect(manual).toEqual(['commit', 'clean']);
    expect(m.status).toBe('null');
  });

  it('a failing prepare turns success into failure: abort runs instead of commit', async () => {
    const jobs = new JobRegistry(new VirtualClock());
    const order: string[] = [];
    const job = jobs.start('q', copier(1, 1, { prepare: async () => Promise.reject(new BlockError('EINVAL', 'no pivot')), commit: () => void order.push('commit'), abort: () => void order.push('abort') }));
    await expect(job.wait()).rejects.toThrow('no pivot');
    expect(order).toEqual(['abort']);
  });

  it('READY: complete() ends the run; a soft cancel of a job whose work declines it completes; pause in READY is STANDBY', async () => {
    const clock = new VirtualClock();
    const jobs = new JobRegistry(clock);
    const mirrorLike = (): JobWork => {
      let completing = false;
      return {
        type: 'mirror',
        async run(job) {
          job.transitionToReady();
          while (!completing && !job.isCancelled && !job.cancelRequested) await job.idle();
        },
        complete(job) {
          completing = true;
          job.enter();
        },
        cancel: (job, force) => force || !job.isReady,
      };
    };
    const a = jobs.start('a', mirrorLike());
    const ea = record(a);
    await flush();
    expect(a.status).toBe('ready');
    a.pause();
    a.enter();
    await flush();
    expect(a.status).toBe('standby');
    a.resume();
    await flush();
    expect(a.status).toBe('ready');
    a.complete();
    await a.wait();
    expect(ea.events).toEqual(['ready', 'completed']);

    const b = jobs.start('b', mirrorLike());
    const eb = record(b);
    await flush();
    b.cancel(false);
    await b.wait();
    expect(eb.events).toEqual(['ready', 'completed']);

    const c = jobs.start('c', mirrorLike());
    const ec = record(c);
    await flush();
    c.cancel(true);
    await expect(c.wait()).rejects.toMatchObject({ code: 'ECANCELED' });
    expect(ec.events).toEqual(['ready', 'cancelled']);
  });

  it('the stop error policy pauses the job (io-status failed/nospace) until resumed, then retries', async () => {
    const jobs = new JobRegistry(new VirtualClock());
    let failures = 1;
    let tries = 0;
    const job = jobs.start('e', {
      type: 'mirror',
      async run(j) {
        for (;;) {
          tries++;
          try {
            if (failures-- > 0) throw new BlockError('ENOSPC', 'full');
            return;
          } catch (e) {
            await j.onIoError('enospc', 'write', e);
          }
        }
      },
    });
    const errors: unknown[] = [];
    job.on('io-error', (e) => errors.push({ operation: e.operation, action: e.action }));
    await flush();
    expect(job.status).toBe('paused');
    expect(job.userPaused).toBe(true);
    expect(job.ioStatus).toBe('nospace');
    expect(errors).toEqual([{ operation: 'write', action: 'stop' }]);
    job.resume();
    await job.wait();
    expect(tries).toBe(2);
    expect(job.ioStatus).toBe('ok');
  });
});
