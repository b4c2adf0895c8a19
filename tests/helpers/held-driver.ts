// A protocol driver for tests of what happens while writes are in flight: its writes,
// write-zeroes and discards stay pending until the test settles them, one by one.
import { testProtocolDriver } from './test-protocol-driver.js';

/** Settles one held request: `ok` fulfils it, otherwise it fails with EIO (a device error). */
export type SettleHeld = (ok: boolean) => void;

/** The driver `held` of `size` bytes; `onHold` gets each request's settle function as the driver takes it. */
export function heldDriver(size: number, onHold: (settle: SettleHeld) => void) {
  const hold = () =>
    new Promise<void>((resolve, reject) => {
      onHold((ok) => (ok ? resolve() : reject(Object.assign(new Error('device error'), { code: 'EIO' }))));
    });
  return testProtocolDriver('held', size, { write: hold, writeZeroes: hold, discard: hold });
}
