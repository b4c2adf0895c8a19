import type { ServerRequest } from './request.js';

/** What a READ needs of its connection once the drive has answered. */
export interface ReadJobHost {
  readDone(job: ReadJob): void;
  readFailed(job: ReadJob, e: unknown): void;
}

const NO_FRAME = Buffer.alloc(0);

/**
 * One READ in flight: its request, the reply frame the drive fills behind the header, and the
 * budget bytes it holds. A connection reuses these records, and each record's two continuations
 * are made once, so a READ costs no async function frames and no closures of its own.
 */
export class ReadJob {
  req: ServerRequest | null = null;
  frame: Buffer = NO_FRAME;
  bytes = 0;
  readonly done: () => void;
  readonly failed: (e: unknown) => void;

  constructor(host: ReadJobHost) {
    this.done = () => host.readDone(this);
    this.failed = (e) => host.readFailed(this, e);
  }

  /** Lets go of the request and frame (the record goes back for reuse). */
  clear(): void {
    this.req = null;
    this.frame = NO_FRAME;
    this.bytes = 0;
  }
}
