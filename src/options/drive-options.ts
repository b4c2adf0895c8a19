// The options of a drive: its root node's options plus the drive's own keys. Defined here, below
// the Drive, so that the option syntaxes (-drive strings, QMP, QOM) can produce them.
import type { BuiltinNodeOptions } from '../drivers/options.js';
import type { NodeOptions } from '../node/driver.js';
import type { ThrottleOptions } from '../throttle/limits.js';
import type { ErrorAction } from './error-policy.js';

/** The drive's own keys, besides the options of its root node. */
export interface DriveOwnOptions {
  /** Unique id of the drive in its layer (default: drive0, drive1, …). */
  id?: string;
  /** I/O limits of the drive and its group (see {@link Drive.setLimits}). */
  throttle?: ThrottleOptions;
  /** What a failed read does (QEMU `rerror`): `report` (default), `ignore`, `stop`. */
  rerror?: ErrorAction;
  /** What a failed write, write-zeroes, discard or flush does (QEMU `werror`): `report` (default), `ignore`, `stop`, `enospc`. */
  werror?: ErrorAction;
  /**
   * `true`: QEMU's `snapshot=on`: the image is opened read-only under a temporary qcow2 overlay
   * that takes the writes and is removed on close. A string names an internal snapshot of a
   * qcow2 root node to open instead (the qcow2 driver's own `snapshot` option).
   */
  snapshot?: boolean | string;
}

/** Options of a drive: the root node's options (blockdev-add style) plus the drive's own keys. */
export interface DriveOptions extends NodeOptions, DriveOwnOptions {}

/** Typed options of a drive whose root node is of a built-in driver (a misspelt key fails to compile). */
export type BuiltinDriveOptions = BuiltinNodeOptions extends infer T ? (T extends unknown ? Omit<T, keyof DriveOwnOptions> & DriveOwnOptions : never) : never;
