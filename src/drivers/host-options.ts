// Typed options of the host drivers (Node only): loaded by the Node entry, which adds them to
// the built-in drivers' options; the browser entry does not, so its types need nothing of Node.
import type { fileDriver } from './file/index.js';
import type { nbdDriver } from './nbd/index.js';
import type { rbdDriver } from './rbd/adapter.js';
import type { DriverNodeOptions } from './options.js';

/** Options of a `file` node (a host file or block device). */
export type FileNodeOptions = DriverNodeOptions<'file', (typeof fileDriver)['schema']>;
/** Options of an `nbd` node (an export of an NBD server). */
export type NbdNodeOptions = DriverNodeOptions<'nbd', (typeof nbdDriver)['schema']>;
/** Options of an `rbd` node (a Ceph RBD image); `key-secret` is QEMU's spelling of `keySecret`. */
export type RbdNodeOptions = DriverNodeOptions<'rbd', (typeof rbdDriver)['schema']> & {
  /** QEMU's spelling of `keySecret`. */
  'key-secret'?: string;
};

declare module './options.js' {
  interface BuiltinDriverOptions {
    /** See {@link FileNodeOptions}. */
    file: FileNodeOptions;
    /** See {@link NbdNodeOptions}. */
    nbd: NbdNodeOptions;
    /** See {@link RbdNodeOptions}. */
    rbd: RbdNodeOptions;
  }
}
