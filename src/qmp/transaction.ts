/**
 * QMP `transaction` (QEMU blockdev.c qmp_transaction) with the dirty bitmap actions and
 * `abort`: all or nothing. Every action is parsed before anything is done (a malformed one
 * changes nothing), then each is prepared in order; the first that fails makes the ones already
 * prepared abort, newest first, and its error is the answer. Only when all are prepared are they
 * committed.
 */
import type { BackupJobSpec } from '../jobs/backup.js';
import type { Job } from '../jobs/job.js';
import { JobTxn } from '../jobs/job-txn.js';
import type { BlockLayer } from '../layer.js';
import { parseBlockdevBackup, prepareBlockdevBackup } from './backup-commands.js';
import { type DriveBackupArgs, parseDriveBackup, prepareDriveBackup } from './drive-backup-command.js';
import {
  type BitmapAddArgs,
  type BitmapMergeArgs,
  type BitmapRef,
  type PreparedAction,
  parseBitmapAdd,
  parseBitmapMerge,
  parseBitmapRef,
  prepareBitmapAdd,
  prepareBitmapClear,
  prepareBitmapMerge,
  prepareBitmapRecording,
  prepareBitmapRemove,
} from './bitmap-commands.js';
import { type Args, dict, generic, list, member, only, str } from './qapi-args.js';
import { type InternalSnapshotArgs, parseInternalSnapshot, prepareInternalSnapshot } from './snapshot-internal-commands.js';
import { type PreparedSnapshot, type SnapshotArgs, type SnapshotSyncArgs, parseSnapshot, parseSnapshotSync, prepareSnapshot, prepareSnapshotSync } from './snapshot-external.js';

/** QAPI TransactionActionKind values this server carries out. */
const ACTIONS = [
  'abort',
  'block-dirty-bitmap-add',
  'block-dirty-bitmap-remove',
  'block-dirty-bitmap-clear',
  'block-dirty-bitmap-enable',
  'block-dirty-bitmap-disable',
  'block-dirty-bitmap-merge',
  'blockdev-snapshot-sync',
  'blockdev-snapshot',
  'blockdev-backup',
  'blockdev-snapshot-internal-sync',
  'drive-backup',
] as const;

/** QAPI TransactionActionKind values QEMU has that need block jobs or external snapshots, not here. */
const JOB_ACTIONS: string[] = [];

type ActionKind = (typeof ACTIONS)[number];

/** One parsed action. */
type Action =
  | { type: 'abort' }
  | { type: 'block-dirty-bitmap-add'; data: BitmapAddArgs }
  | { type: 'block-dirty-bitmap-remove' | 'block-dirty-bitmap-clear' | 'block-dirty-bitmap-enable' | 'block-dirty-bitmap-disable'; data: BitmapRef }
  | { type: 'block-dirty-bitmap-merge'; data: BitmapMergeArgs }
  | { type: 'blockdev-snapshot-sync'; data: SnapshotSyncArgs }
  | { type: 'blockdev-snapshot'; data: SnapshotArgs }
  | { type: 'blockdev-backup'; data: BackupJobSpec }
  | { type: 'blockdev-snapshot-internal-sync'; data: InternalSnapshotArgs }
  | { type: 'drive-backup'; data: DriveBackupArgs };

/** QAPI ActionCompletionMode. */
type CompletionMode = 'individual' | 'grouped';

function parseAction(value: unknown, i: number): Action {
  const at = `actions[${i}]`;
  const action = dict(value, at);
  const type = str(action, 'type', true, `${at}.`);
  if (!(ACTIONS as readonly string[]).includes(type) && !JOB_ACTIONS.includes(type)) throw generic(`Parameter 'type' does not accept value '${type}'`);
  const data = member(action, 'data', `${at}.`);
  const path = `${at}.data.`;
  let parsed: Action;
  switch (type as ActionKind) {
    case 'abort':
      only(data, [], path);
      parsed = { type: 'abort' };
      break;
    case 'block-dirty-bitmap-add':
      parsed = { type: 'block-dirty-bitmap-add', data: parseBitmapAdd(data, path) };
      break;
    case 'block-dirty-bitmap-merge':
      parsed = { type: 'block-dirty-bitmap-merge', data: parseBitmapMerge(data, path) };
      break;
    case 'block-dirty-bitmap-remove':
    case 'block-dirty-bitmap-clear':
    case 'block-dirty-bitmap-enable':
    case 'block-dirty-bitmap-disable':
      parsed = { type: type as 'block-dirty-bitmap-clear', data: parseBitmapRef(data, path) };
      break;
    case 'blockdev-snapshot-sync':
      parsed = { type: 'blockdev-snapshot-sync', data: parseSnapshotSync(data, path) };
      break;
    case 'blockdev-snapshot':
      parsed = { type: 'blockdev-snapshot', data: parseSnapshot(data, path) };
      break;
    case 'blockdev-backup':
      parsed = { type: 'blockdev-backup', data: parseBlockdevBackup(data, path) };
      break;
    case 'blockdev-snapshot-internal-sync':
      parsed = { type: 'blockdev-snapshot-internal-sync', data: parseInternalSnapshot(data, path) };
      break;
    case 'drive-backup':
      parsed = { type: 'drive-backup', data: parseDriveBackup(data, path) };
      break;
    default:
      throw generic(`Transaction action '${type}' needs block jobs or external snapshots, which this server does not have`);
  }
  only(action, ['type', 'data'], `${at}.`);
  return parsed;
}

function parseProperties(args: Args): CompletionMode {
  if (args.properties === undefined) return 'individual';
  const properties = dict(args.properties, 'properties');
  const mode = str(properties, 'completion-mode', false, 'properties.') ?? 'individual';
  if (mode !== 'individual' && mode !== 'grouped') throw generic(`Parameter 'completion-mode' does not accept value '${mode}'`);
  only(properties, ['completion-mode'], 'properties.');
  return mode;
}

function prepare(layer: BlockLayer, action: Action, mode: CompletionMode): PreparedAction | Promise<PreparedAction | PreparedSnapshot> {
  if (action.type === 'abort') throw generic('Transaction aborted using Abort action');
  // An external snapshot starts no job either, but QEMU accepts it in a grouped transaction.
  if (action.type === 'blockdev-snapshot-sync') return prepareSnapshotSync(layer, action.data);
  if (action.type === 'blockdev-snapshot') return prepareSnapshot(layer, action.data);
  // Backups start jobs that can end as a group; the others start none (QEMU refuses them).
  if (action.type === 'blockdev-backup') return prepareBlockdevBackup(layer, action.data);
  if (action.type === 'drive-backup') return prepareDriveBackup(layer, action.data);
  if (mode === 'grouped') throw generic(`Action '${action.type}' does not support Transaction property completion-mode = grouped`);
  switch (action.type) {
    case 'block-dirty-bitmap-add':
      return prepareBitmapAdd(layer, action.data);
    case 'block-dirty-bitmap-remove':
      return prepareBitmapRemove(layer, action.data);
    case 'block-dirty-bitmap-clear':
      return prepareBitmapClear(layer, action.data);
    case 'block-dirty-bitmap-enable':
      return prepareBitmapRecording(layer, action.data, true);
    case 'block-dirty-bitmap-disable':
      return prepareBitmapRecording(layer, action.data, false);
    case 'block-dirty-bitmap-merge':
      return prepareBitmapMerge(layer, action.data);
    case 'blockdev-snapshot-internal-sync':
      return prepareInternalSnapshot(layer, action.data);
  }
}

/** QMP transaction: `{actions: [{type, data}, …], properties?: {completion-mode}}`. */
export async function runTransaction(layer: BlockLayer, args: Args): Promise<Record<string, never>> {
  const actions = list(args, 'actions').map(parseAction);
  const mode = parseProperties(args);
  only(args, ['actions', 'properties']);
  const prepared: (PreparedAction | PreparedSnapshot)[] = [];
  // The jobs the actions make, to end as one group when grouped (QEMU's JobTxn).
  const jobs: Job[] = [];
  const collect = (job: Job) => jobs.push(job);
  if (mode === 'grouped') layer.jobs.on('created', collect);
  try {
    for (const action of actions) prepared.push(await prepare(layer, action, mode));
  } catch (e) {
    for (let i = prepared.length - 1; i >= 0; i--) await prepared[i]!.abort();
    throw e;
  } finally {
    layer.jobs.off('created', collect);
  }
  if (jobs.length > 1) {
    const txn = new JobTxn();
    for (const job of jobs) txn.add(job);
  }
  for (const p of prepared) await p.commit();
  return {};
}
