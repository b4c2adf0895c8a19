// A worker_threads worker that serves a BlockLayer to its parent (tests/integration/worker-layer.test.ts).
import { parentPort } from 'node:worker_threads';
import { serveWorkerLayer } from '../../src/worker/index.js';

if (parentPort === null) throw new Error('run me as a worker');
serveWorkerLayer(parentPort);
