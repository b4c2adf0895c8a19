/**
 * QEMU's job state machine (job.c): the statuses, which transitions are legal, and which
 * verbs (QMP commands) each status accepts. Pure tables, so the rules are read in one place.
 */

/** QAPI JobStatus. */
export type JobStatus = 'undefined' | 'created' | 'running' | 'paused' | 'ready' | 'standby' | 'waiting' | 'pending' | 'aborting' | 'concluded' | 'null';

/** QAPI JobVerb: what a user may ask of a job. */
export type JobVerb = 'cancel' | 'pause' | 'resume' | 'set-speed' | 'complete' | 'finalize' | 'dismiss';

/** QAPI JobType: the kinds of jobs. */
export type JobType = 'commit' | 'stream' | 'mirror' | 'backup' | 'create' | 'amend' | 'snapshot-load' | 'snapshot-save' | 'snapshot-delete';

/** QAPI BlockdevOnError: what a job does when its I/O fails. */
export type JobErrorPolicy = 'report' | 'ignore' | 'enospc' | 'stop' | 'auto';

const TRANSITIONS: Readonly<Record<JobStatus, readonly JobStatus[]>> = {
  undefined: ['created'],
  created: ['running', 'aborting', 'null'],
  running: ['paused', 'ready', 'waiting', 'aborting'],
  paused: ['running'],
  ready: ['standby', 'waiting', 'aborting'],
  standby: ['ready'],
  waiting: ['pending', 'aborting'],
  pending: ['aborting', 'concluded'],
  aborting: ['aborting', 'concluded'],
  concluded: ['null'],
  null: [],
};

const ACTIVE: readonly JobStatus[] = ['created', 'running', 'paused', 'ready', 'standby'];
const VERBS: Readonly<Record<JobVerb, readonly JobStatus[]>> = {
  cancel: [...ACTIVE, 'waiting', 'pending'],
  pause: ACTIVE,
  resume: ACTIVE,
  'set-speed': ACTIVE,
  complete: ['ready'],
  finalize: ['pending'],
  dismiss: ['concluded'],
};

/** Whether a job may go from `from` to `to`. */
export function canTransition(from: JobStatus, to: JobStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Whether a job in `status` accepts `verb`. */
export function acceptsVerb(status: JobStatus, verb: JobVerb): boolean {
  return VERBS[verb].includes(status);
}

/** The job has finished its work (QEMU job_is_completed). */
export function isCompletedStatus(status: JobStatus): boolean {
  return status === 'waiting' || status === 'pending' || status === 'aborting' || status === 'concluded' || status === 'null';
}

/** The job is READY (or paused while ready). */
export function isReadyStatus(status: JobStatus): boolean {
  return status === 'ready' || status === 'standby';
}
