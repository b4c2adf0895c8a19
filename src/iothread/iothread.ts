// QEMU's iothread (`--object iothread,id=…`): a worker thread with its own event loop, serving the
// exports placed in it. The main thread keeps the listening socket and the handshake; each
// connection is then handed to the iothread (src/nbd/handover.ts), which parses, serves and
// answers its requests.
import { closeSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { EventEmitter } from 'eventemitter3';
import { BlockError } from '../errors.js';
import type { HandedConnection } from '../nbd/handover.js';
import type { NbdExport } from '../nbd/export.js';
import { deserializeError } from '../worker/protocol.js';
import type { IothreadCall, IothreadData, IothreadExportSpec, IothreadMessage, ServedShape } from './messages.js';
import { RemoteExportDrive } from './remote-drive.js';

/** The argument the bundled command is started with to run as an iothread (cli/main.ts). */
export const IOTHREAD_VERB = '__iothread';

export interface IoThreadEvents {
  connect: (client: { address: string; port?: number; export: string | null }) => void;
  disconnect: (client: { address: string; port?: number; export: string | null; reason?: string }) => void;
  error: (e: { message: string; client?: { address: string; port?: number; export: string | null } }) => void;
}

/** Starts the worker: the module beside this one (source under tsx, or the built package), else the bundled command itself. */
function spawn(data: IothreadData): Worker {
  const here = import.meta.url;
  const source = here.endsWith('.ts');
  const entry = new URL(source ? './worker-main.ts' : './worker-main.js', here);
  if (entry.protocol === 'file:' && existsSync(fileURLToPath(entry))) {
    // A worker does not inherit the parent's --import loader (Node 20): it registers tsx itself.
    const tsx = source ? pathToFileURL(createRequire(here).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href : undefined;
    // `import (` spelled with a space: scripts/build-cli.ts refuses the bundle's own import() calls, not this text for another thread.
    const register = tsx === undefined ? '' : `(await import (${JSON.stringify(tsx)})).register();`;
    return new Worker(`(async () => { ${register} (await import (${JSON.stringify(entry.href)})).runIothread(); })();`, { eval: true, workerData: data });
  }
  const script = process.argv[1];
  if (script === undefined) throw new BlockError('ENOTSUP', 'iothread: cannot find the module to start the thread with');
  return new Worker(script, { argv: [IOTHREAD_VERB], workerData: data });
}

/** A call without its sequence number (distributed over the union's members). */
type CallBody = Exclude<IothreadCall, { op: 'adopt' }> extends infer C ? (C extends { seq: number } ? Omit<C, 'seq'> : never) : never;

/** One iothread and the exports it serves. */
export class IoThread extends EventEmitter<IoThreadEvents> {
  private readonly worker: Worker;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private gone: Error | null = null;
  private closing: Promise<void> | null = null;
  private readonly exited: Promise<void>;
  /** Export names served here. */
  readonly exports = new Set<string>();

  constructor(
    readonly id: string,
    options: { maxConnections?: number; memoryBudget?: number } = {},
  ) {
    super();
    this.worker = spawn({ id, ...options });
    this.worker.on('message', (m: IothreadMessage) => this.receive(m));
    this.worker.on('error', (e) => this.fail(new BlockError('EIO', `iothread ${id}: ${e.message}`, { cause: e })));
    this.exited = new Promise((resolve) => this.worker.once('exit', () => resolve()));
    void this.exited.then(() => this.fail(new BlockError('EIO', `iothread ${id}: its thread has exited`)));
  }

  /** The worker's thread id (QMP query-iothreads' thread-id). */
  get threadId(): number {
    return this.worker.threadId;
  }

  /** Opens the export's graph in the iothread and serves it there; the export to add to the main thread's NBD server. */
  async serveExport(spec: IothreadExportSpec): Promise<NbdExport> {
    const shape = (await this.call({ op: 'export', spec })) as ServedShape;
    this.exports.add(spec.name);
    const drive = new RemoteExportDrive(spec.id, shape, this.id);
    return {
      name: spec.name,
      drive: drive.asDrive(),
      readOnly: shape.readOnly,
      ...(spec.description === undefined ? {} : { description: spec.description }),
      ...(spec.allocationDepth === true ? { allocationDepth: true } : {}),
      handover: (c) => this.handOver(c),
    };
  }

  /** Stops serving an export here (after the main thread removed it from its server). */
  async removeExport(name: string): Promise<void> {
    await this.call({ op: 'remove', name });
    this.exports.delete(name);
  }

  /** QMP block_set_io_throttle's arguments for a drive of this iothread (by its export id). */
  async setLimits(id: string, limits: Record<string, unknown>): Promise<void> {
    await this.call({ op: 'set-limits', id, limits });
  }

  /** Passes a connection to the iothread; its descriptor is closed here if the thread is gone. */
  handOver(connection: HandedConnection): void {
    if (this.gone !== null || this.closing !== null) {
      closeSync(connection.fd);
      return;
    }
    const message: IothreadCall = { seq: 0, op: 'adopt', connection };
    this.worker.postMessage(message);
  }

  /** Ends the exports here (requests in flight answered, drives flushed), closes the graph, ends the thread. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.gone === null) await this.call({ op: 'close' }, true);
      await this.worker.terminate();
      await this.exited;
    })();
    return this.closing;
  }

  private call(body: CallBody, closing = false): Promise<unknown> {
    if (this.gone !== null) return Promise.reject(this.gone);
    if (this.closing !== null && !closing) return Promise.reject(new BlockError('ECLOSED', `iothread ${this.id} is closing`));
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.worker.postMessage({ ...body, seq });
    });
  }

  private receive(m: IothreadMessage): void {
    if ('event' in m) {
      if (m.event === 'error') this.emit('error', { message: m.message ?? '', ...(m.client ? { client: m.client } : {}) });
      else if (m.client !== undefined) this.emit(m.event, m.event === 'disconnect' && m.reason !== undefined ? { ...m.client, reason: m.reason } : m.client);
      return;
    }
    const p = this.pending.get(m.seq);
    if (p === undefined) return;
    this.pending.delete(m.seq);
    if (m.error !== undefined) p.reject(deserializeError(m.error));
    else p.resolve(m.value);
  }

  private fail(e: Error): void {
    this.gone ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}
