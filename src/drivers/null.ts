import * as z from 'zod';
import { builtOnce } from '../node/lazy-driver.js';
import { defineDriver } from '../node/driver.js';
import { sizeSchema } from '../options/size.js';

// built when first asked for: a schema costs every start, and most runs open no such node
const schema = builtOnce(() =>
  z
    .object({
      /** Virtual size (QEMU null-co default: 1 GiB). */
      size: sizeSchema.default(2 ** 30),
      /** Fill read buffers with zeros (QEMU `read-zeroes`); otherwise leave them as they are. */
      readZeroes: z.boolean().default(true),
      /** Fixed completion latency per request in nanoseconds (QEMU `latency-ns`). */
      latencyNs: z.number().int().nonnegative().default(0),
    })
    .strict(),
);

/** One settled promise for every request without latency: `then` on it costs no allocation of its own. */
const settled = Promise.resolve();
const now = () => settled;
/** TypedArray fill (a memset): Buffer's own fill validates its arguments in JS first, at several times the cost for 4 KiB. */
const fillZero = (buffer: Uint8Array) => Uint8Array.prototype.fill.call(buffer, 0);

/** Reads zeros, forgets writes, optionally after a fixed latency: the backend for benchmarks (QEMU null-co). */
export const nullDriver = defineDriver({
  name: 'null',
  capabilities: { kind: 'protocol' },
  get schema() {
    return schema();
  },
  async open({ options, clock }) {
    const { size, readZeroes, latencyNs } = options;
    const wait =
      latencyNs === 0
        ? now
        : () => new Promise<void>((resolve) => clock.setTimer(clock.now() + latencyNs, resolve));
    return {
      alignment: 1,
      length: () => size,
      read(_offset, buffer) {
        if (readZeroes) fillZero(buffer);
        return wait();
      },
      write: () => wait(),
      flush: () => wait(),
      discard: () => wait(),
      writeZeroes: () => wait(),
      async blockStatus(offset, length) {
        return { offset, length, data: !readZeroes, zero: readZeroes, allocated: true, depth: 0 };
      },
      async close() {},
    };
  },
});
