// One face for the ends a message channel has on each platform: a browser Worker, its global
// scope or a MessagePort (addEventListener, events carrying `data`), and Node's worker_threads
// Worker and parentPort (EventEmitter `on`, listeners given the data itself).

/** Where messages go and come from: a Worker, a worker's `self`/`parentPort`, or a MessagePort. */
export interface WorkerEndpoint {
  postMessage(message: unknown, transfer?: ArrayBuffer[]): void;
  addEventListener?(type: string, listener: (event: { type: string }) => void): void;
  removeEventListener?(type: string, listener: (event: { type: string }) => void): void;
  on?(type: string, listener: (value: unknown) => void): unknown;
  off?(type: string, listener: (value: unknown) => void): unknown;
  start?(): void;
}

/** Listens to the endpoint's messages; returns the function that stops listening. */
export function onMessage(endpoint: WorkerEndpoint, listener: (data: unknown) => void): () => void {
  if (typeof endpoint.on === 'function') {
    endpoint.on('message', listener);
    return () => endpoint.off?.('message', listener);
  }
  const wrapped = (event: { type: string }) => listener((event as { data?: unknown }).data);
  endpoint.addEventListener?.('message', wrapped);
  endpoint.start?.(); // a MessagePort delivers nothing before start() when listened to this way
  return () => endpoint.removeEventListener?.('message', wrapped);
}

/** Calls `listener` once if the other side dies: an uncaught error or exit of the worker. */
export function onFailure(endpoint: WorkerEndpoint, listener: (reason: string) => void): () => void {
  let done = false;
  const once = (reason: string) => {
    if (done) return;
    done = true;
    listener(reason);
  };
  if (typeof endpoint.on === 'function') {
    const error = (e: unknown) => once(`the worker failed: ${e instanceof Error ? e.message : String(e)}`);
    const exit = (code: unknown) => once(`the worker exited (code ${String(code)})`);
    endpoint.on('error', error);
    endpoint.on('exit', exit);
    return () => {
      endpoint.off?.('error', error);
      endpoint.off?.('exit', exit);
    };
  }
  const error = (event: { type: string }) => once(`the worker failed: ${(event as { message?: string }).message ?? 'an uncaught error'}`);
  endpoint.addEventListener?.('error', error);
  return () => endpoint.removeEventListener?.('error', error);
}

/** Whether a buffer is shared memory, which crosses to the other thread without a copy or a transfer. */
export function isShared(bytes: Uint8Array): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && bytes.buffer instanceof SharedArrayBuffer;
}
