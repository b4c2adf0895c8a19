// The page's handle on a BlockLayer served in a worker (serveWorkerLayer there).
import type { BuiltinDriveOptions, DriveOptions } from '../layer.js';
import { WorkerCaller } from './caller.js';
import type { WorkerEndpoint } from './endpoint.js';
import type { OpenedDrive } from './protocol.js';
import { WorkerDrive } from './worker-drive.js';

/** A BlockLayer in another thread: opens drives there and hands back {@link WorkerDrive}s. */
export class WorkerLayer {
  private readonly caller: WorkerCaller;
  private readonly drives = new Set<WorkerDrive>();
  private closed = false;

  constructor(endpoint: WorkerEndpoint) {
    this.caller = new WorkerCaller(endpoint);
  }

  /** Opens a drive in the worker's layer, with the options of BlockLayer.openDrive (they must be cloneable: no functions or class instances). */
  async openDrive(options: BuiltinDriveOptions | DriveOptions): Promise<WorkerDrive> {
    const opened = (await this.caller.call({ op: 'open', options })) as OpenedDrive;
    const drive = new WorkerDrive(this.caller, opened.handle, opened);
    this.drives.add(drive);
    drive.once('closed', () => this.drives.delete(drive));
    return drive;
  }

  /** Closes the worker's layer (every drive's requests settle first) and stops listening to the worker; the worker itself stays the owner's to terminate. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.caller.call({ op: 'close-layer' });
    } finally {
      for (const drive of [...this.drives]) drive.markClosed();
      this.caller.detach('the worker layer is closed');
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Connects to a layer served with {@link serveWorkerLayer} at the other end of `endpoint`: a
 * browser `Worker` (or MessagePort), or a worker_threads `Worker` in Node.
 */
export function connectWorkerLayer(endpoint: WorkerEndpoint): WorkerLayer {
  return new WorkerLayer(endpoint);
}
