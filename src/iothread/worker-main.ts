// An iothread's own thread: a BlockLayer holding the graphs of the exports placed here, and an
// NBD server that takes over their connections after the main thread's handshake. Requests are
// parsed, served and answered here; the main thread is not on their path.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { BlockError } from '../errors.js';
import { BlockLayer } from '../layer.js';
import { NbdServer } from '../nbd/server.js';
import { parseThrottleGroupObject } from '../options/qom.js';
import { blockSetIoThrottle } from '../options/qmp.js';
import { blockdevAdd } from '../qmp/blockdev-commands.js';
import { serializeError } from '../worker/protocol.js';
import type { IothreadCall, IothreadData, IothreadExportSpec, IothreadMessage, ServedShape } from './messages.js';

/** Runs the iothread in this worker until the main thread asks it to close. */
export function runIothread(): void {
  const port = parentPort;
  if (isMainThread || port === null) throw new BlockError('EINVAL', 'runIothread: runs in a worker started by IoThread only');
  const data = workerData as IothreadData;
  const layer = new BlockLayer();
  const server = new NbdServer({
    ...(data.maxConnections === undefined ? {} : { maxConnections: data.maxConnections }),
    ...(data.memoryBudget === undefined ? {} : { memoryBudget: data.memoryBudget }),
  });
  const post = (m: IothreadMessage) => port.postMessage(m);
  server.on('connect', (client) => post({ seq: 0, event: 'connect', client }));
  server.on('disconnect', (client) => post({ seq: 0, event: 'disconnect', client: { address: client.address, ...(client.port === undefined ? {} : { port: client.port }), export: client.export }, ...(client.reason === undefined ? {} : { reason: client.reason }) }));
  server.on('error', ({ error, client }) => post({ seq: 0, event: 'error', message: error.message, ...(client ? { client } : {}) }));

  const openExport = async (spec: IothreadExportSpec): Promise<ServedShape> => {
    for (const text of spec.groups) {
      const g = parseThrottleGroupObject(text);
      layer.createThrottleGroup(g.id, g.limits);
    }
    for (const b of spec.blockdevs) await blockdevAdd(layer, b.args, b.keyval);
    const node = layer.findNode(spec.nodeName);
    if (node === undefined) throw new BlockError('ENOENT', `Cannot find device='' nor node-name='${spec.nodeName}'`, { field: 'node-name' });
    if (spec.writable && node.readOnly) throw new BlockError('EINVAL', 'Cannot export read-only node as writable', { field: 'writable' });
    const drive = layer.attachDrive(node, { id: spec.id, internal: true });
    server.addExport({
      name: spec.name,
      drive,
      readOnly: !spec.writable,
      ...(spec.description === undefined ? {} : { description: spec.description }),
      ...(spec.allocationDepth === true ? { allocationDepth: true } : {}),
    });
    return { length: drive.length, readOnly: !spec.writable || drive.readOnly };
  };

  const run = async (call: IothreadCall): Promise<unknown> => {
    switch (call.op) {
      case 'export':
        return openExport(call.spec);
      case 'remove':
        await server.removeExport(call.name);
        return undefined;
      case 'set-limits':
        blockSetIoThrottle(layer, { ...call.limits, id: call.id });
        return undefined;
      case 'close':
        // The exports' drives are flushed by the server's close, the graph closed after it.
        await server.close();
        await layer.close();
        // The main thread ends the thread once it has the reply.
        return undefined;
      case 'adopt':
        server.adopt(call.connection);
        return undefined;
    }
  };

  port.on('message', (call: IothreadCall) => {
    if (call.seq === 0) {
      void run(call).catch((e: Error) => post({ seq: 0, event: 'error', message: e.message }));
      return;
    }
    run(call).then(
      (value) => post({ seq: call.seq, value }),
      (e: unknown) => post({ seq: call.seq, error: serializeError(e) }),
    );
  });
}
