/**
 * The QMP commands this server answers, over a {@link BlockLayer}: capabilities negotiation,
 * query-commands, query-block, query-blockstats, query-named-block-nodes,
 * block_set_io_throttle, cont, block-export-add / block-export-del (through an injected
 * {@link ExportManager}), the dirty bitmap commands and transaction, and quit. Results use QAPI's member names; errors QEMU's classes.
 */
import type { Drive } from '../drive.js';
import { qapiSnapshotInfo } from '../drivers/qcow2/snapshots.js';
import { isBlockError } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import { blockSetIoThrottle, queryBlockThrottle, toQueryBlockThrottle } from '../options/qmp.js';
import {
  commitNow,
  parseBitmapAdd,
  parseBitmapMerge,
  parseBitmapRef,
  prepareBitmapAdd,
  prepareBitmapClear,
  prepareBitmapMerge,
  prepareBitmapRecording,
  prepareBitmapRemove,
  qapiDirtyBitmaps,
} from './bitmap-commands.js';
import { type Args, generic, only, optBool } from './qapi-args.js';
import { runTransaction } from './transaction.js';
import { JOB_HANDLERS } from './job-commands.js';
import { jobFilterNodes } from '../jobs/job-filter.js';
import { blockResize } from './resize-command.js';
import { internalSnapshotDeleteSync, internalSnapshotSync, parseInternalSnapshot, parseInternalSnapshotDelete } from './snapshot-internal-commands.js';
import { blockCommit, blockStream } from './stream-commit-commands.js';
import { BLOCKDEV_HANDLERS } from './blockdev-commands.js';
import { blockdevReopen } from './reopen-commands.js';
import { SNAPSHOT_HANDLERS } from './snapshot-external.js';
import { blockdevMirror, driveMirror } from './mirror-commands.js';
import { blockdevBackup } from './backup-commands.js';
import { driveBackup } from './drive-backup-command.js';
import { QmpError, type QmpRequest } from './wire.js';

export { generic, only, optBool, str } from './qapi-args.js';

/** What the server does for block-export-add / block-export-del (the NBD server, typically). */
export interface ExportManager {
  /** Adds an export (QAPI BlockExportOptions: `type`, `id`, `node-name`, …). */
  add(args: Record<string, unknown>): Promise<void>;
  /** Removes an export (`id`, optional `mode`). */
  del(args: Record<string, unknown>): Promise<void>;
  /** The exports as QAPI BlockExportInfo (`id`, `type`, `node-name`, `shutting-down`), for query-block-exports. */
  list?(): Record<string, unknown>[];
  /** Calls `listener` with export events (BLOCK_EXPORT_DELETED); returns the function that stops it. */
  watch?(listener: (event: string, data: Record<string, unknown>) => void): () => void;
}

/** One client's state. */
export interface QmpSession {
  /** qmp_capabilities has succeeded: commands are accepted and events sent. */
  negotiated: boolean;
  /** quit was executed: the server stops after this response. */
  quitRequested: boolean;
}

/** What commands run against. */
export interface QmpContext {
  /** The layer the commands act on. */
  layer: BlockLayer;
  /** What block-export-add / block-export-del act on; absent: those commands fail. */
  exports?: ExportManager;
  /** The state of the client that sent the command. */
  session: QmpSession;
}

type Handler = (args: Args, ctx: QmpContext) => unknown;

/** bs->filename: the first plain filename down the `file` chain, else `<driver>://` of its last node (as QEMU's null-co://). */
function filenameOf(node: BlockNode): string {
  let last = node;
  for (let n: BlockNode | undefined = node; n; n = n.child('file')) {
    const f = n.options.filename ?? n.info().filename;
    if (typeof f === 'string') return f;
    last = n;
  }
  return `${last.driver.name}://`;
}

/** QAPI ImageInfo of a node (with its backing chain unless `flat`). */
function imageInfo(node: BlockNode, flat: boolean): Record<string, unknown> {
  const info = node.info();
  const out: Record<string, unknown> = { filename: filenameOf(node), format: node.driver.name, 'virtual-size': node.length };
  if (typeof info.clusterSize === 'number') out['cluster-size'] = info.clusterSize;
  if (typeof info.dirty === 'boolean') out['dirty-flag'] = info.dirty;
  if (typeof info.backingFile === 'string') {
    out['backing-filename'] = info.backingFile;
    if (typeof info.backingFormat === 'string') out['backing-filename-format'] = info.backingFormat;
  }
  const snaps = info.snapshots as { id: string; name: string; vmStateSize: number; date: { sec: number; nsec: number }; vmClockNs: number }[] | undefined;
  if (Array.isArray(snaps) && snaps.length > 0) {
    out.snapshots = snaps.map(qapiSnapshotInfo);
  }
  const backing = node.child('backing');
  if (backing && !flat) out['backing-image'] = imageInfo(backing, false);
  return out;
}

/** QAPI BlockDeviceInfo of a node; `throttle` gives the drive's limits (root nodes of drives). */
function blockDeviceInfo(node: BlockNode, throttle: Record<string, number | string>, flat: boolean): Record<string, unknown> {
  let depth = 0;
  for (let n = node.child('backing'); n; n = n.child('backing')) depth++;
  const info = node.info();
  const out: Record<string, unknown> = {
    file: filenameOf(node),
    'node-name': node.name,
    ro: node.readOnly,
    drv: node.driver.name,
  };
  if (typeof info.backingFile === 'string') out.backing_file = info.backingFile;
  Object.assign(out, {
    backing_file_depth: depth,
    encrypted: false,
    detect_zeroes: 'off',
    ...throttle,
    image: imageInfo(node, flat),
    cache: { writeback: true, direct: false, 'no-flush': false },
    write_threshold: 0,
  });
  const bitmaps = qapiDirtyBitmaps(node);
  if (bitmaps !== undefined) out['dirty-bitmaps'] = bitmaps;
  return out;
}

/** A drive's counters as QAPI BlockDeviceStats. */
function blockDeviceStats(drive: Drive): Record<string, unknown> {
  const s = drive.stats();
  const out: Record<string, unknown> = {
    rd_bytes: s.rdBytes,
    wr_bytes: s.wrBytes,
    zone_append_bytes: 0,
    unmap_bytes: s.unmapBytes,
    rd_operations: s.rdOperations,
    wr_operations: s.wrOperations,
    zone_append_operations: 0,
    flush_operations: s.flushOperations,
    unmap_operations: s.unmapOperations,
    rd_total_time_ns: s.rdTotalTimeNs,
    wr_total_time_ns: s.wrTotalTimeNs,
    zone_append_total_time_ns: 0,
    flush_total_time_ns: s.flushTotalTimeNs,
    unmap_total_time_ns: s.unmapTotalTimeNs,
    wr_highest_offset: s.wrHighestOffset,
    rd_merged: 0,
    wr_merged: 0,
    zone_append_merged: 0,
    unmap_merged: 0,
  };
  if (s.idleTimeNs !== undefined) out.idle_time_ns = s.idleTimeNs;
  Object.assign(out, {
    failed_rd_operations: s.failedRdOperations,
    failed_wr_operations: s.failedWrOperations,
    failed_zone_append_operations: 0,
    failed_flush_operations: s.failedFlushOperations,
    failed_unmap_operations: s.failedUnmapOperations,
    invalid_rd_operations: s.invalidRdOperations,
    invalid_wr_operations: s.invalidWrOperations,
    invalid_zone_append_operations: 0,
    invalid_flush_operations: s.invalidFlushOperations,
    invalid_unmap_operations: s.invalidUnmapOperations,
    account_invalid: true,
    account_failed: true,
    timed_stats: [],
  });
  return out;
}

function exportManager(ctx: QmpContext, command: string): ExportManager {
  if (ctx.exports === undefined) throw generic(`The command ${command} has been disabled for this instance`);
  return ctx.exports;
}

/** A BlockError (or any error) from our code as QMP's GenericError with its message. */
export function toQmpError(e: unknown): QmpError {
  if (e instanceof QmpError) return e;
  if (isBlockError(e)) return generic(e.message);
  return generic(e instanceof Error ? e.message : String(e));
}

const HANDLERS: ReadonlyMap<string, Handler> = new Map<string, Handler>([
  [
    'qmp_capabilities',
    (args, ctx) => {
      only(args, ['enable']);
      const enable = args.enable;
      if (enable !== undefined) {
        if (!Array.isArray(enable)) throw generic(`Invalid parameter type for 'enable', expected: array`);
        const unknown = enable.find((c) => c !== 'oob');
        if (unknown !== undefined) throw generic(`Parameter 'enable' does not accept value '${String(unknown)}'`);
        // oob is a known capability, but this server does not offer it.
        if (enable.length > 0) throw generic(`Capability 'oob' not available`);
      }
      ctx.session.negotiated = true;
      return {};
    },
  ],
  [
    'query-commands',
    (args, ctx) => {
      only(args, []);
      return [...HANDLERS.keys()].filter((name) => !name.startsWith('block-export-') || ctx.exports !== undefined).map((name) => ({ name }));
    },
  ],
  [
    'query-block',
    (args, ctx) => {
      only(args, []);
      return ctx.layer.listDrives().map((d) => {
        const out: Record<string, unknown> = { device: d.id, locked: false, removable: false, type: 'unknown' };
        if (!d.closed) out.inserted = blockDeviceInfo(d.node, queryBlockThrottle(d), false);
        out['io-status'] = d.ioStatus;
        return out;
      });
    },
  ],
  [
    'query-blockstats',
    (args, ctx) => {
      only(args, ['query-nodes']);
      if (optBool(args, 'query-nodes')) throw generic(`Parameter 'query-nodes': per-node statistics are not kept, only per drive`);
      return ctx.layer.listDrives().map((d) => ({ device: d.id, 'node-name': d.node.name, stats: blockDeviceStats(d) }));
    },
  ],
  [
    'query-named-block-nodes',
    (args, ctx) => {
      only(args, ['flat']);
      const flat = optBool(args, 'flat') ?? false;
      // Every node of the layer: drives' graphs first (as before), then added nodes and exports' graphs.
      const roots = new Map<BlockNode, Drive>();
      for (const d of ctx.layer.listDrives()) if (!d.closed && !roots.has(d.node)) roots.set(d.node, d);
      // Running jobs' filters first (QEMU lists the newest node first).
      const filters = [...jobFilterNodes(ctx.layer.jobs)].reverse();
      return [...filters, ...ctx.layer.listNodes().filter((n) => !filters.includes(n))].map((n) => {
        const d = roots.get(n);
        return blockDeviceInfo(n, d !== undefined ? queryBlockThrottle(d) : toQueryBlockThrottle(null), flat);
      });
    },
  ],
  [
    'block_set_io_throttle',
    (args, ctx) => {
      try {
        blockSetIoThrottle(ctx.layer, args);
      } catch (e) {
        if (isBlockError(e, 'ENOENT') && (e.field === 'device' || e.field === 'id')) throw new QmpError('DeviceNotFound', e.message);
        throw e;
      }
      return {};
    },
  ],
  [
    'cont',
    (args, ctx) => {
      only(args, []);
      for (const d of ctx.layer.listDrives()) if (d.isPaused) d.resume();
      return {};
    },
  ],
  [
    'block-export-add',
    async (args, ctx) => {
      await exportManager(ctx, 'block-export-add').add(args);
      return {};
    },
  ],
  [
    'block-export-del',
    async (args, ctx) => {
      await exportManager(ctx, 'block-export-del').del(args);
      return {};
    },
  ],
  ['block-dirty-bitmap-add', (args, ctx) => commitNow(prepareBitmapAdd(ctx.layer, parseBitmapAdd(args)))],
  ['block-dirty-bitmap-remove', (args, ctx) => commitNow(prepareBitmapRemove(ctx.layer, parseBitmapRef(args)))],
  ['block-dirty-bitmap-clear', (args, ctx) => commitNow(prepareBitmapClear(ctx.layer, parseBitmapRef(args)))],
  ['block-dirty-bitmap-enable', (args, ctx) => commitNow(prepareBitmapRecording(ctx.layer, parseBitmapRef(args), true))],
  ['block-dirty-bitmap-disable', (args, ctx) => commitNow(prepareBitmapRecording(ctx.layer, parseBitmapRef(args), false))],
  ['block-dirty-bitmap-merge', (args, ctx) => commitNow(prepareBitmapMerge(ctx.layer, parseBitmapMerge(args)))],
  ['transaction', (args, ctx) => runTransaction(ctx.layer, args)],
  ...BLOCKDEV_HANDLERS.map(([name, run]): [string, Handler] => [name, (args, ctx) => run(args, ctx.layer)]),
  ...SNAPSHOT_HANDLERS.map(([name, run]): [string, Handler] => [name, (args, ctx) => run(args, ctx.layer)]),
  [
    'query-block-exports',
    (args, ctx) => {
      only(args, []);
      return ctx.exports?.list?.() ?? [];
    },
  ],
  ['blockdev-mirror', (args, ctx) => blockdevMirror(args, ctx.layer)],
  ['drive-mirror', (args, ctx) => driveMirror(args, ctx.layer)],
  ['blockdev-backup', (args, ctx) => blockdevBackup(ctx.layer, args)],
  ['drive-backup', (args, ctx) => driveBackup(ctx.layer, args)],
  ...JOB_HANDLERS.map(([name, run]): [string, Handler] => [name, (args, ctx) => run(args, ctx.layer)]),
  ['blockdev-snapshot-internal-sync', (args, ctx) => internalSnapshotSync(ctx.layer, parseInternalSnapshot(args)).then(() => ({}))],
  ['blockdev-snapshot-delete-internal-sync', (args, ctx) => internalSnapshotDeleteSync(ctx.layer, parseInternalSnapshotDelete(args))],
  ['block-stream', (args, ctx) => blockStream(args, ctx.layer)],
  ['block-commit', (args, ctx) => blockCommit(args, ctx.layer)],
  ['blockdev-reopen', (args, ctx) => blockdevReopen(ctx.layer, args)],
  [
    'quit',
    (args, ctx) => {
      only(args, []);
      ctx.session.quitRequested = true;
      return {};
    },
  ],
  ['block_resize', (args, ctx) => blockResize(ctx.layer, args)],
]);

/** Names of the commands the server knows. */
export const QMP_COMMANDS: readonly string[] = [...HANDLERS.keys()];

/**
 * Runs a checked request in a session, as QEMU's monitor does: before negotiation only
 * qmp_capabilities is accepted (anything else, known or not, is CommandNotFound "Expecting
 * capabilities negotiation…"); after it, qmp_capabilities itself is CommandNotFound. Resolves
 * to the command's return value; rejects with a {@link QmpError}.
 */
export async function runCommand(request: QmpRequest, ctx: QmpContext): Promise<unknown> {
  const { execute: name, arguments: args } = request;
  if (!ctx.session.negotiated && name !== 'qmp_capabilities') {
    throw new QmpError('CommandNotFound', "Expecting capabilities negotiation with 'qmp_capabilities'");
  }
  if (ctx.session.negotiated && name === 'qmp_capabilities') {
    throw new QmpError('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
  }
  const handler = HANDLERS.get(name);
  if (handler === undefined) throw new QmpError('CommandNotFound', `The command ${name} has not been found`);
  try {
    return await handler(args, ctx);
  } catch (e) {
    throw toQmpError(e);
  }
}
