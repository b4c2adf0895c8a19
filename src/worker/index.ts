// blocklayer/worker: a BlockLayer in a worker thread, its drives used from another thread.
export { connectWorkerLayer, WorkerLayer } from './client.js';
export type { WorkerEndpoint } from './endpoint.js';
export { serveWorkerLayer, type WorkerLayerHost } from './host.js';
export { WorkerDrive } from './worker-drive.js';
