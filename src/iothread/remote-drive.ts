// The main thread's stand-in for the drive of an export an iothread serves. The main thread's NBD
// server negotiates with it (size, read-only) and hands every connection over before its first
// request; the data path never reaches it, and a request that did would fail, not be answered
// with made-up data.
import type { Drive } from '../drive.js';
import { BlockError } from '../errors.js';
import type { ServedShape } from './messages.js';

export class RemoteExportDrive {
  readonly closed = false;
  constructor(
    readonly id: string,
    private readonly shape: ServedShape,
    readonly iothread: string,
  ) {}

  get length(): number {
    return this.shape.length;
  }

  get readOnly(): boolean {
    return this.shape.readOnly;
  }

  /** The iothread drains its own drive when it closes or removes the export. */
  liftThrottling(): () => void {
    return () => {};
  }

  /** The iothread flushes its drive when it closes. */
  flush(): Promise<void> {
    return Promise.resolve();
  }

  read(): Promise<never> {
    return Promise.reject(new BlockError('ENOTSUP', `drive ${this.id} is served by iothread ${this.iothread}: its requests go there`));
  }

  /** Typed as the server's exports are: only the members above are ever used on it. */
  asDrive(): Drive {
    return this as unknown as Drive;
  }
}
