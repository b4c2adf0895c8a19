// The browser build has no sockets, so no NBD client: an nbd:// target is refused clearly.
import { BlockError } from '../errors.js';

export async function probeNbdFormat(_options: Record<string, unknown>): Promise<'qcow2' | 'raw'> {
  throw new BlockError('ENOTSUP', 'NBD needs TCP or Unix sockets, which a browser does not have', { field: 'driver' });
}
