/**
 * QMP's job commands (qapi/job.json and the block-job-* spellings of qapi/block-core.json):
 * query-jobs, query-block-jobs, job-pause/-resume/-cancel/-complete/-finalize/-dismiss,
 * block-job-pause/-resume/-cancel/-complete/-finalize/-dismiss/-set-speed, and the job events
 * (JOB_STATUS_CHANGE, BLOCK_JOB_READY/PENDING/COMPLETED/CANCELLED/ERROR) with QEMU's members.
 */
import type { BlockLayer } from '../layer.js';
import type { Job } from '../jobs/job.js';
import { type Args, generic, only, optBool, optSpeed, str } from './qapi-args.js';
import { QmpError } from './wire.js';

/** A job by `id` for the job-* commands (QEMU: "Job not found", GenericError). */
function jobById(layer: BlockLayer, args: Args): Job {
  const id = str(args, 'id', true);
  const job = layer.jobs.get(id);
  if (job === undefined) throw generic('Job not found');
  return job;
}

/** A job by `device` (its id) for the block-job-* commands (QEMU: DeviceNotActive). */
function jobByDevice(layer: BlockLayer, args: Args, key = 'device'): Job {
  const id = str(args, key, true);
  const job = layer.jobs.get(id);
  if (job === undefined) throw new QmpError('DeviceNotActive', `Block job '${id}' not found`);
  return job;
}

/** A job's common members of the BLOCK_JOB_* events. */
function blockJobEventData(job: Job): Record<string, unknown> {
  return { type: job.type, device: job.id, len: job.progress.total, offset: job.progress.current, speed: job.speed };
}

/** QAPI JobInfo. */
export function jobInfo(job: Job): Record<string, unknown> {
  const out: Record<string, unknown> = { id: job.id, type: job.type, status: job.status, 'current-progress': job.progress.current, 'total-progress': job.progress.total };
  if (job.error !== undefined) out.error = job.error;
  return out;
}

/** QAPI BlockJobInfo. */
export function blockJobInfo(job: Job): Record<string, unknown> {
  const out: Record<string, unknown> = {
    type: job.type,
    device: job.id,
    len: job.progress.total,
    offset: job.progress.current,
    busy: job.busy,
    paused: job.userPaused,
    speed: job.speed,
    'io-status': job.ioStatus,
    ready: job.isReady,
    status: job.status,
    'auto-finalize': job.autoFinalize,
    'auto-dismiss': job.autoDismiss,
  };
  if (job.error !== undefined) out.error = job.error;
  return out;
}

/** QMP speed argument: an int (QAPI 'int'), QEMU refuses a negative one. */
function speedArg(args: Args): number {
  const v = optSpeed(args);
  if (v === undefined) throw generic(`Parameter 'speed' is missing`);
  if (v < 0) throw generic(`Parameter 'speed' expects a non-negative value`);
  return v;
}

type Handler = (args: Args, layer: BlockLayer) => unknown;

/** The job commands by name (newest job first in the queries, as QEMU lists them). */
export const JOB_HANDLERS: ReadonlyArray<[string, Handler]> = [
  [
    'query-jobs',
    (args, layer) => {
      only(args, []);
      return layer.jobs.list().reverse().map(jobInfo);
    },
  ],
  [
    'query-block-jobs',
    (args, layer) => {
      only(args, []);
      return layer.jobs.list().reverse().map(blockJobInfo);
    },
  ],
  ['job-pause', (args, layer) => {
    only(args, ['id']);
    jobById(layer, args).pause();
    return {};
  }],
  ['job-resume', (args, layer) => {
    only(args, ['id']);
    jobById(layer, args).resume();
    return {};
  }],
  ['job-cancel', (args, layer) => {
    only(args, ['id']);
    jobById(layer, args).cancel(true);
    return {};
  }],
  ['job-complete', (args, layer) => {
    only(args, ['id']);
    jobById(layer, args).complete();
    return {};
  }],
  [
    'job-finalize',
    async (args, layer) => {
      only(args, ['id']);
      await jobById(layer, args).finalize();
      return {};
    },
  ],
  ['job-dismiss', (args, layer) => {
    only(args, ['id']);
    jobById(layer, args).dismiss();
    return {};
  }],
  ['block-job-pause', (args, layer) => {
    only(args, ['device']);
    jobByDevice(layer, args).pause();
    return {};
  }],
  ['block-job-resume', (args, layer) => {
    only(args, ['device']);
    jobByDevice(layer, args).resume();
    return {};
  }],
  [
    'block-job-cancel',
    (args, layer) => {
      only(args, ['device', 'force']);
      const force = optBool(args, 'force') ?? false;
      const job = jobByDevice(layer, args);
      if (job.userPaused && !force) throw generic(`The block job for device '${job.id}' is currently paused`);
      job.cancel(force);
      return {};
    },
  ],
  ['block-job-complete', (args, layer) => {
    only(args, ['device']);
    jobByDevice(layer, args).complete();
    return {};
  }],
  [
    'block-job-finalize',
    async (args, layer) => {
      only(args, ['id']);
      await jobByDevice(layer, args, 'id').finalize();
      return {};
    },
  ],
  ['block-job-dismiss', (args, layer) => {
    only(args, ['id']);
    jobByDevice(layer, args, 'id').dismiss();
    return {};
  }],
  [
    'block-job-set-speed',
    (args, layer) => {
      only(args, ['device', 'speed']);
      str(args, 'device', true);
      const speed = speedArg(args);
      jobByDevice(layer, args).setSpeed(speed);
      return {};
    },
  ],
];

/**
 * Forwards every job of the layer (present and future) as QMP events through `send`; returns
 * the function that stops it.
 */
export function forwardJobEvents(layer: BlockLayer, send: (event: string, data: Record<string, unknown>) => void): () => void {
  const stops = new Set<() => void>();
  const watch = (job: Job) => {
    const listeners = {
      'status-change': (status: string) => {
        send('JOB_STATUS_CHANGE', { id: job.id, status });
        if (status === 'null') stop();
      },
      ready: () => send('BLOCK_JOB_READY', blockJobEventData(job)),
      pending: () => send('BLOCK_JOB_PENDING', { type: job.type, id: job.id }),
      completed: (error: string | undefined) => send('BLOCK_JOB_COMPLETED', { ...blockJobEventData(job), ...(error === undefined ? {} : { error }) }),
      cancelled: () => send('BLOCK_JOB_CANCELLED', blockJobEventData(job)),
      'io-error': (e: { operation: string; action: string }) => send('BLOCK_JOB_ERROR', { device: job.id, operation: e.operation, action: e.action }),
    };
    for (const [name, fn] of Object.entries(listeners)) job.on(name as 'ready', fn as () => void);
    const stop = () => {
      for (const [name, fn] of Object.entries(listeners)) job.off(name as 'ready', fn as () => void);
      stops.delete(stop);
    };
    stops.add(stop);
  };
  for (const job of layer.jobs.list()) watch(job);
  // A new job is already CREATED when the registry announces it: QEMU's first JOB_STATUS_CHANGE.
  const created = (job: Job) => {
    send('JOB_STATUS_CHANGE', { id: job.id, status: job.status });
    watch(job);
  };
  layer.jobs.on('created', created);
  return () => {
    layer.jobs.off('created', created);
    for (const stop of [...stops]) stop();
  };
}
