// Messages to the other thread, sent together: calls (or replies) made in the same tick go as
// one postMessage, since each message costs the two threads a task and a clone whatever its size.
import type { WorkerEndpoint } from './endpoint.js';

export class Outbox {
  private messages: unknown[] = [];
  private transfers: (ArrayBuffer[] | undefined)[] = [];
  private scheduled = false;
  private readonly flushNow = () => this.flush();

  constructor(
    private readonly endpoint: WorkerEndpoint,
    /** A message that cannot be cloned (postMessage threw for it alone): its sender must settle it otherwise. */
    private readonly unsendable: (message: unknown, error: unknown) => void,
  ) {}

  /** Queues a message; `transfer` lists buffers that move with it instead of being copied. */
  send(message: unknown, transfer?: ArrayBuffer[]): void {
    this.messages.push(message);
    this.transfers.push(transfer);
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.flushNow);
    }
  }

  private flush(): void {
    this.scheduled = false;
    const messages = this.messages;
    const transfers = this.transfers;
    this.messages = [];
    this.transfers = [];
    if (messages.length === 1) {
      this.post(messages[0], transfers[0]);
      return;
    }
    const all: ArrayBuffer[] = [];
    for (const t of transfers) if (t !== undefined) for (const b of t) all.push(b);
    try {
      this.endpoint.postMessage(messages, all);
    } catch {
      // One of them cannot be cloned: send them one by one, so only that one fails.
      for (let i = 0; i < messages.length; i++) this.post(messages[i], transfers[i]);
    }
  }

  private post(message: unknown, transfer: ArrayBuffer[] | undefined): void {
    try {
      this.endpoint.postMessage([message], transfer);
    } catch (e) {
      this.unsendable(message, e);
    }
  }
}
