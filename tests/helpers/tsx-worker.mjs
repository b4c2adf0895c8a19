// Starts a TypeScript worker under tsx: Node 20 workers do not take `--import` loaders from
// execArgv, so the worker registers tsx itself, then imports the module named in workerData.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.entry);
