import type { Drive } from '../drive.js';
import * as P from '../drivers/nbd/protocol.js';
import type { BufferPool } from './buffer-pool.js';
import { trim, writeZeroes } from './commands.js';
import type { MetaSelection } from './meta-contexts.js';
import type { ServerRequest } from './request.js';
import type { StatusChunks } from './status-chunks.js';

/**
 * Runs a checked request other than READ on the drive. True when it succeeded and a simple
 * success reply is due; false when it sent its replies itself (BLOCK_STATUS's chunks). Throws
 * what failed (the connection answers with an error reply). A WRITE's payload goes back to the
 * pool once the drive has written it.
 */
export async function driveCommand(req: ServerRequest, drive: Drive, payload: Buffer | null, pool: BufferPool, status: StatusChunks, meta: MetaSelection | null): Promise<boolean> {
  switch (req.type) {
    case P.NBD_CMD_BLOCK_STATUS:
      await status.all(req, drive, meta as MetaSelection);
      return false;
    case P.NBD_CMD_WRITE:
      await drive.write(req.offset, payload as Buffer);
      // The drive is done with the payload once the write succeeded (a failed one may leave pieces running).
      pool.give(payload as Buffer);
      if (req.flags & P.NBD_CMD_FLAG_FUA) await drive.flush();
      return true;
    case P.NBD_CMD_FLUSH:
      await drive.flush();
      return true;
    case P.NBD_CMD_TRIM:
      await trim(drive, req);
      return true;
    case P.NBD_CMD_WRITE_ZEROES:
      await writeZeroes(drive, req);
      return true;
    default:
      // NBD_CMD_CACHE is advisory: nothing to prefetch into (the drive has its own caches, if any).
      return true;
  }
}
