import * as z from 'zod';
import type { Clock } from '../clock.js';
import { builtOnce } from '../node/lazy-driver.js';
import { defineDriver } from '../node/driver.js';
import type { BlockStatus, DriverInstance } from '../node/types.js';
import { sizeSchema } from '../options/size.js';

// built when first asked for: a schema costs every start, and most runs open no such node
const schema = builtOnce(() =>
  z
    .object({
      /** Virtual size (QEMU null-co default: 1 GiB). */
      size: sizeSchema().default(2 ** 30),
      /** Fill read buffers with zeros (QEMU `read-zeroes`); otherwise leave them as they are. */
      readZeroes: z.boolean().default(true),
      /** Fixed completion latency per request in nanoseconds (QEMU `latency-ns`). */
      latencyNs: z.number().int().nonnegative().default(0),
    })
    .strict(),
);

/** One settled promise for every request without latency: `then` on it costs no allocation of its own. */
const settled = Promise.resolve();
/** TypedArray fill (a memset): Buffer's own fill validates its arguments in JS first, at several times the cost for 4 KiB. */
const fillZero = (buffer: Uint8Array) => Uint8Array.prototype.fill.call(buffer, 0);

/**
 * An open null node. A class rather than an object of closures: benchmarks and tests open
 * thousands of these, and methods on a prototype cost nothing per node.
 */
class NullInstance implements DriverInstance {
  readonly alignment = 1;

  constructor(
    private size: number,
    private readonly readZeroes: boolean,
    private readonly latencyNs: number,
    private readonly clock: Clock,
  ) {}

  length(): number {
    return this.size;
  }

  read(_offset: number, buffer: Uint8Array): Promise<void> {
    if (this.readZeroes) fillZero(buffer);
    return this.wait();
  }

  write(): Promise<void> {
    return this.wait();
  }

  flush(): Promise<void> {
    return this.wait();
  }

  discard(): Promise<void> {
    return this.wait();
  }

  writeZeroes(): Promise<void> {
    return this.wait();
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatus> {
    return { offset, length, data: !this.readZeroes, zero: this.readZeroes, allocated: true, depth: 0 };
  }

  /** The size just changes (QEMU's null-co has no resize; a test target may want one). */
  async truncate(newSize: number): Promise<void> {
    this.size = newSize;
  }

  /** Nothing depends on the mode. */
  async reopen(): Promise<undefined> {
    return undefined;
  }

  async close(): Promise<void> {}

  private wait(): Promise<void> {
    if (this.latencyNs === 0) return settled;
    return new Promise<void>((resolve) => this.clock.setTimer(this.clock.now() + this.latencyNs, resolve));
  }
}

/** Reads zeros, forgets writes, optionally after a fixed latency: the backend for benchmarks (QEMU null-co). */
export const nullDriver = defineDriver({
  name: 'null',
  capabilities: { kind: 'protocol' },
  get schema() {
    return schema();
  },
  async open({ options, clock }) {
    return new NullInstance(options.size, options.readZeroes, options.latencyNs, clock);
  },
});
