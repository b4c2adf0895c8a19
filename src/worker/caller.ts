// The page's end of the channel: numbers the calls, pairs each reply with its call, settles
// every call exactly once (a dead worker fails those in flight), and hands events to drives.
import type { DriveEvents } from '../drive/events.js';
import { BlockError } from '../errors.js';
import { onFailure, onMessage, type WorkerEndpoint } from './endpoint.js';
import { Outbox } from './outbox.js';
import { deserializeError, EVENT_ID, MAX_SPARES, type SerializedError, type WorkerCall, type WorkerMessage } from './protocol.js';

/** A call without its id, which the caller assigns. */
export type CallBody = WorkerCall extends infer C ? (C extends WorkerCall ? Omit<C, 'id'> : never) : never;

interface Pending {
  resolve(value: unknown): void;
  reject(error: BlockError): void;
}

/** Receives the events of one drive handle. */
export type EventSink = (event: keyof DriveEvents, payload: unknown) => void;

export class WorkerCaller {
  private readonly pending = new Map<number, Pending>();
  private readonly sinks = new Map<number, EventSink>();
  private nextId = 1;
  /** Buffers of read replies whose bytes were copied out: they go back to the worker with the next reads. */
  private readonly spares: ArrayBuffer[] = [];
  /** Why the channel is gone, once it is. */
  private failure: string | null = null;
  private readonly stops: (() => void)[];

  private readonly outbox: Outbox;

  constructor(endpoint: WorkerEndpoint) {
    this.outbox = new Outbox(endpoint, (message, e) => this.unsendable(message as WorkerCall, e));
    this.stops = [
      onMessage(endpoint, (data) => {
        for (const m of data as WorkerMessage[]) this.receive(m);
      }),
      onFailure(endpoint, (reason) => this.fail(reason)),
    ];
  }

  /** A call whose arguments cannot be cloned (a function in the options, …) fails alone. */
  private unsendable(call: WorkerCall, e: unknown): void {
    const pending = this.pending.get(call.id);
    if (pending === undefined) return;
    this.pending.delete(call.id);
    pending.reject(new BlockError('EINVAL', `the call could not be sent to the worker: ${e instanceof Error ? e.message : String(e)}`, { cause: e }));
  }

  /** Sends a call; resolves with its value, rejects with its BlockError. `transfer` lists buffers that move instead of being copied. */
  call(body: CallBody, transfer?: ArrayBuffer[]): Promise<unknown> {
    if (this.failure !== null) return Promise.reject(new BlockError('EIO', this.failure));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.outbox.send({ ...body, id }, transfer);
    });
  }

  /** Hands a read reply's buffer back for reuse (its bytes are no longer needed here). */
  giveSpare(buffer: ArrayBuffer): void {
    if (this.spares.length < MAX_SPARES) this.spares.push(buffer);
  }

  /** A spare buffer to send back with a read, if any. */
  takeSpare(): ArrayBuffer | undefined {
    return this.spares.pop();
  }

  /** The id the next call gets (for a cancel that must name it). */
  peekId(): number {
    return this.nextId;
  }

  /** Tells the worker to abort call `id` (its drive rejects it with ECANCELED if it has not reached the driver). */
  cancel(id: number): void {
    if (this.failure === null && this.pending.has(id)) void this.call({ op: 'cancel', call: id, reason: 'aborted' }).catch(() => undefined);
  }

  addSink(handle: number, sink: EventSink): void {
    this.sinks.set(handle, sink);
  }

  removeSink(handle: number): void {
    this.sinks.delete(handle);
  }

  /** Stops listening to the endpoint (the worker itself is the owner's to terminate). */
  detach(reason: string): void {
    for (const stop of this.stops) stop();
    this.fail(reason);
  }

  private receive(message: WorkerMessage): void {
    if (message.id === EVENT_ID) {
      const m = message as { drive: number; event: keyof DriveEvents; payload: unknown };
      this.sinks.get(m.drive)?.(m.event, m.payload);
      return;
    }
    const pending = this.pending.get(message.id);
    if (pending === undefined) return;
    this.pending.delete(message.id);
    const error = (message as { error?: SerializedError }).error;
    if (error !== undefined) pending.reject(deserializeError(error));
    else pending.resolve((message as { value?: unknown }).value);
  }

  private fail(reason: string): void {
    if (this.failure !== null) return;
    this.failure = reason;
    const error = new BlockError('EIO', reason);
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(error);
  }
}
