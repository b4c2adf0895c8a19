// `blocklayer serve`'s iothreads: each started, its exports opened there and added to the main
// thread's NBD server as exports that hand their connections over.
import type { NbdServer } from '../nbd/server.js';
import type { NbdExportManager } from '../qmp/exports.js';
import { IoThread } from './iothread.js';
import type { Placement } from './placement.js';

/** Starts the placement's iothreads and serves their exports; on failure those started are closed again. */
export async function startIothreads(placement: Placement, server: NbdServer, manager: NbdExportManager, options: { maxConnections?: number; memoryBudget?: number } = {}): Promise<IoThread[]> {
  const threads = placement.iothreads.map((id) => new IoThread(id, options));
  try {
    for (const t of threads) {
      for (const spec of placement.specs.get(t.id) ?? []) {
        server.addExport(await t.serveExport(spec));
        manager.adopt(spec.id, spec.name);
      }
    }
  } catch (e) {
    await Promise.all(threads.map((t) => t.close().catch(() => {})));
    throw e;
  }
  return threads;
}
