// The worker's side: a BlockLayer whose drives are used from another thread through messages.
// Reads come back in buffers transferred (not copied) to the caller, or straight into the
// caller's shared memory; every call gets exactly one reply, whatever happens.
import type { Drive } from '../drive.js';
import type { DriveEvents } from '../drive/events.js';
import { BlockError } from '../errors.js';
import { BlockLayer, type DriveOptions } from '../layer.js';
import type { DirtyExtent } from '../node/dirty-bitmap.js';
import type { AddDirtyBitmapOptions } from '../node/dirty-bitmaps.js';
import type { ThrottleOptions } from '../throttle/limits.js';
import { onMessage, type WorkerEndpoint } from './endpoint.js';
import { Outbox } from './outbox.js';
import { EVENT_ID, MAX_SPARES, type OpenedDrive, serializeError, type WorkerCall, type WorkerMessage } from './protocol.js';

/** A layer served to another thread: see {@link serveWorkerLayer}. */
export interface WorkerLayerHost {
  /** The layer the calls reach (drives opened here directly are not visible to the other side). */
  readonly layer: BlockLayer;
  /** Stops answering and closes the layer. */
  close(): Promise<void>;
}

/** Serializes an event's payload: the BlockErrors in it become fields. */
function payloadOf(args: unknown[]): unknown {
  const payload = args[0];
  if (typeof payload !== 'object' || payload === null || !('error' in payload)) return payload;
  const error = (payload as { error: unknown }).error;
  return { ...payload, error: serializeError(error) };
}

/** A Drive's dirty-bitmap call, by name. */
function bitmapCall(drive: Drive, call: Extract<WorkerCall, { op: 'bitmap' }>): unknown {
  switch (call.method) {
    case 'add':
      return drive.addDirtyBitmap(call.name, call.options as AddDirtyBitmapOptions | undefined);
    case 'remove':
      return drive.removeDirtyBitmap(call.name);
    case 'clear':
      return drive.clearDirtyBitmap(call.name);
    case 'enable':
      return drive.enableDirtyBitmap(call.name);
    case 'disable':
      return drive.disableDirtyBitmap(call.name);
    case 'merge':
      return drive.mergeDirtyBitmaps(call.name, call.sources ?? []);
    case 'list':
      return drive.dirtyBitmaps();
  }
}

/**
 * Serves `layer` (a new one by default) to the thread at the other end of `endpoint` (in a
 * dedicated worker: `self`; in Node's worker_threads: `parentPort`), which reaches it with
 * {@link connectWorkerLayer}.
 */
export function serveWorkerLayer(endpoint: WorkerEndpoint, layer: BlockLayer = new BlockLayer()): WorkerLayerHost {
  const drives = new Map<number, Drive>();
  const aborts = new Map<number, AbortController>();
  let nextHandle = 1;
  // Read replies move their buffer to the page; the page sends it back when it copied the bytes
  // out, so a steady stream of reads allocates nothing (fresh buffers are slow to get in browsers).
  const spares = new Map<number, ArrayBuffer[]>();
  let spareCount = 0;
  const keepSpare = (buffer: ArrayBuffer) => {
    if (spareCount >= MAX_SPARES) return;
    const list = spares.get(buffer.byteLength);
    if (list === undefined) spares.set(buffer.byteLength, [buffer]);
    else list.push(buffer);
    spareCount++;
  };
  const bufferOf = (length: number): Uint8Array => {
    const spare = spares.get(length)?.pop();
    if (spare === undefined) return new Uint8Array(length);
    spareCount--;
    return new Uint8Array(spare);
  };

  // A value that cannot be cloned: the call fails instead of never settling.
  const outbox = new Outbox(endpoint, (message, e) => {
    const m = message as WorkerMessage;
    if (m.id !== EVENT_ID) fail(m.id, new BlockError('EIO', `the reply could not be sent: ${e instanceof Error ? e.message : String(e)}`));
  });
  const reply = (id: number, value: unknown, transfer?: ArrayBuffer[]) => {
    const message: WorkerMessage = value === undefined ? { id } : { id, value };
    outbox.send(message, transfer);
  };
  const fail = (id: number, e: unknown) => outbox.send({ id, error: serializeError(e) } satisfies WorkerMessage);

  const driveOf = (handle: number): Drive => {
    const drive = drives.get(handle);
    if (drive === undefined) throw new BlockError('ECLOSED', `drive handle ${handle} is not open in the worker`, { field: 'drive' });
    return drive;
  };

  // Which events each handle already forwards: the drive's own listener count would also count
  // listeners the worker's code added, and then the page would never get that event.
  const forwarded = new Map<number, Set<keyof DriveEvents>>();
  const forward = (handle: number, drive: Drive, event: keyof DriveEvents) => {
    if (event === 'closed') return; // the caller's own
    let events = forwarded.get(handle);
    if (events === undefined) {
      events = new Set();
      forwarded.set(handle, events);
    }
    if (events.has(event)) return;
    events.add(event);
    drive.on(event, (...args: unknown[]) => {
      outbox.send({ id: EVENT_ID, drive: handle, event, payload: payloadOf(args) } satisfies WorkerMessage);
    });
  };

  /** The request options of a call: a signal only when the caller may abort it. */
  const optionsFor = (call: WorkerCall) => {
    if (call.abortable !== true) return undefined;
    const controller = new AbortController();
    aborts.set(call.id, controller);
    return { signal: controller.signal };
  };

  async function run(call: WorkerCall): Promise<void> {
    switch (call.op) {
      case 'open': {
        const drive = await layer.openDrive(call.options as DriveOptions);
        const handle = nextHandle++;
        drives.set(handle, drive);
        const opened: OpenedDrive = { handle, id: drive.id, nodeName: drive.node.name, length: drive.length, readOnly: drive.readOnly };
        return reply(call.id, opened);
      }
      case 'read': {
        const drive = driveOf(call.drive);
        if (call.target !== undefined) {
          await drive.read(call.offset, call.target, optionsFor(call));
          return reply(call.id, undefined);
        }
        if (call.spare !== undefined) keepSpare(call.spare);
        // A whole buffer of its own (never a slice of a pool) is what can be transferred.
        const bytes = await drive.read(call.offset, bufferOf(Math.max(0, call.length)), optionsFor(call));
        return reply(call.id, bytes, [bytes.buffer as ArrayBuffer]);
      }
      case 'write':
        return reply(call.id, await driveOf(call.drive).write(call.offset, call.data, optionsFor(call)));
      case 'write-zeroes':
        return reply(call.id, await driveOf(call.drive).writeZeroes(call.offset, call.length, optionsFor(call)));
      case 'discard':
        return reply(call.id, await driveOf(call.drive).discard(call.offset, call.length, optionsFor(call)));
      case 'flush':
        return reply(call.id, await driveOf(call.drive).flush(optionsFor(call)));
      case 'block-status':
        return reply(call.id, await driveOf(call.drive).blockStatus(call.offset, call.length));
      case 'block-status-map':
        return reply(call.id, await driveOf(call.drive).blockStatusMap(call.offset, call.length));
      case 'bitmap':
        return reply(call.id, await bitmapCall(driveOf(call.drive), call));
      case 'dirty-extents': {
        const extents: DirtyExtent[] = [];
        for await (const extent of driveOf(call.drive).dirtyExtents(call.name, { offset: call.offset, length: call.length })) {
          extents.push(extent);
          if (extents.length >= call.max) break;
        }
        return reply(call.id, extents);
      }
      case 'stats':
        return reply(call.id, driveOf(call.drive).stats());
      case 'get-limits':
        return reply(call.id, driveOf(call.drive).getLimits());
      case 'set-limits':
        return reply(call.id, driveOf(call.drive).setLimits(call.limits as ThrottleOptions, call.rules));
      case 'resume':
        return reply(call.id, driveOf(call.drive).resume());
      case 'drain':
        return reply(call.id, await driveOf(call.drive).drain());
      case 'resize':
        return reply(call.id, await driveOf(call.drive).resize(call.size, { shrink: call.shrink }));
      case 'listen': {
        forward(call.drive, driveOf(call.drive), call.event);
        return reply(call.id, undefined);
      }
      case 'close': {
        const drive = drives.get(call.drive);
        drives.delete(call.drive);
        forwarded.delete(call.drive);
        return reply(call.id, await drive?.close());
      }
      case 'cancel':
        aborts.get(call.call)?.abort(call.reason);
        return reply(call.id, undefined);
      case 'close-layer':
        drives.clear();
        return reply(call.id, await layer.close());
      default:
        throw new BlockError('EINVAL', `unknown call ${JSON.stringify((call as { op?: unknown }).op)} from the other thread`, { field: 'op' });
    }
  }

  const serve = (call: WorkerCall) => {
    run(call).then(
      () => {
        if (call.abortable === true) aborts.delete(call.id);
      },
      (e: unknown) => {
        if (call.abortable === true) aborts.delete(call.id);
        fail(call.id, e);
      },
    );
  };
  const stop = onMessage(endpoint, (data) => {
    for (const call of data as WorkerCall[]) serve(call);
  });

  return {
    layer,
    async close() {
      stop();
      drives.clear();
      await layer.close();
    },
  };
}
