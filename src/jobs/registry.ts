import { EventEmitter } from 'eventemitter3';
import type { Clock } from '../clock.js';
import { BlockError } from '../errors.js';
import { isWellFormedId } from '../ids.js';
import { Job, type JobOptions, type JobWork } from './job.js';

/** Events of a layer's job registry. */
export interface JobRegistryEvents {
  /** A job was created (before it starts): listen to its events from here. */
  created: (job: Job) => void;
}

/** A layer's jobs by id (QEMU's job list): ids are unique among jobs that exist (until dismissed). */
export class JobRegistry extends EventEmitter<JobRegistryEvents> {
  private readonly jobs = new Map<string, Job>();

  constructor(private readonly clock: Clock) {
    super();
  }

  /** Creates a job with QEMU's id rules and starts it. */
  start(id: string, work: JobWork, options: JobOptions = {}): Job {
    const job = this.create(id, work, options);
    job.start();
    return job;
  }

  /** Creates a job (CREATED) without starting it: a transaction's action starts it on commit or cancels it on abort. */
  create(id: string, work: JobWork, options: JobOptions = {}): Job {
    this.checkId(id);
    const job = new Job(id, work, this.clock, options);
    this.jobs.set(id, job);
    job.on('status-change', (status) => {
      if (status === 'null' && this.jobs.get(id) === job) this.jobs.delete(id);
    });
    this.emit('created', job);
    return job;
  }

  /** Refuses an id that is malformed or taken (QEMU job_create's errors). */
  checkId(id: string): void {
    if (!isWellFormedId(id)) throw new BlockError('EINVAL', `Invalid job ID '${id}'`, { field: 'job-id' });
    if (this.jobs.has(id)) throw new BlockError('EINVAL', `Job ID '${id}' already in use`, { field: 'job-id' });
  }

  /** The job with that id. */
  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  /** All jobs, oldest first. */
  list(): Job[] {
    return [...this.jobs.values()];
  }

  /** Cancels every job and waits until they have concluded (layer close). */
  async cancelAll(): Promise<void> {
    const jobs = this.list();
    for (const job of jobs) {
      if (job.status === 'concluded') job.dismiss();
      else if (job.status !== 'aborting' && job.status !== 'null') job.cancel(true);
    }
    await Promise.all(jobs.map((j) => j.whenConcluded()));
  }
}
