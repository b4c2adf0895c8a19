// A protocol driver for tests of what happens while writes are in flight: its writes,
// write-zeroes and discards stay pending until the test settles them, one by one.
import { z } from 'zod';
import { defineDriver } from '../../src/index.js';

/** Settles one held request: `ok` fulfils it, otherwise it fails with EIO (a device error). */
export type SettleHeld = (ok: boolean) => void;

/** The driver `held` of `size` bytes; `onHold` gets each request's settle function as the driver takes it. */
export function heldDriver(size: number, onHold: (settle: SettleHeld) => void) {
  const hold = () =>
    new Promise<void>((resolve, reject) => {
      onHold((ok) => (ok ? resolve() : reject(Object.assign(new Error('device error'), { code: 'EIO' }))));
    });
  return defineDriver({
    name: 'held',
    capabilities: { kind: 'protocol' },
    schema: z.object({}).strict(),
    async open() {
      return {
        alignment: 1,
        length: () => size,
        read: () => Promise.resolve(),
        write: hold,
        writeZeroes: hold,
        discard: hold,
        flush: () => Promise.resolve(),
        blockStatus: async (offset: number, length: number) => ({ offset, length, data: true, zero: false, allocated: true, depth: 0 }),
        close: async () => {},
      };
    },
  });
}
