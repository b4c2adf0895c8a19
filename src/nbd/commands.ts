import type { Drive } from '../drive.js';
import { nbdErrorFor } from '../drivers/nbd/errors.js';
import * as P from '../drivers/nbd/protocol.js';
import { isBlockError } from '../errors.js';
import { isReadOnly, type NbdExport } from './export.js';
import { offsetText, type ServerRequest } from './request.js';

/** Valid command flags by command (QEMU: FUA on any command; the others on one each). */
const VALID_FLAGS: Readonly<Record<number, number>> = {
  [P.NBD_CMD_READ]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_WRITE]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_FLUSH]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_TRIM]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_CACHE]: P.NBD_CMD_FLAG_FUA,
  [P.NBD_CMD_WRITE_ZEROES]: P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FAST_ZERO,
  [P.NBD_CMD_BLOCK_STATUS]: P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_REQ_ONE,
};

/** Commands served (DISC ends the connection before they are); any other type is answered EINVAL without a payload. */
const KNOWN_COMMANDS: ReadonlySet<number> = new Set([P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_FLUSH, P.NBD_CMD_TRIM, P.NBD_CMD_CACHE, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_BLOCK_STATUS]);

/** A request refused before it reached the drive: the NBD error and why. */
class RequestError extends Error {
  constructor(
    readonly nbdError: number,
    message: string,
  ) {
    super(message);
  }
}

/** The NBD error a failed request is answered with. */
export function replyErrorOf(e: unknown): number {
  return e instanceof RequestError ? e.nbdError : nbdErrorFor(e);
}

/**
 * Refusals that do not need the drive: flags, read-only, bounds, lengths, negotiated contexts
 * (`contexts`: a metadata context was negotiated). Throws the refusal.
 */
export function checkRequest(req: ServerRequest, e: NbdExport, maxRequest: number, contexts: boolean): void {
  // An unknown command: EINVAL, and the connection goes on (as qemu-nbd).
  if (!KNOWN_COMMANDS.has(req.type)) throw new RequestError(P.NBD_EINVAL, `unknown command ${req.type}`);
  // QEMU's order: read-only, then bounds, then flags.
  const writes = req.type === P.NBD_CMD_WRITE || req.type === P.NBD_CMD_TRIM || req.type === P.NBD_CMD_WRITE_ZEROES;
  if (writes && isReadOnly(e)) throw new RequestError(P.NBD_EPERM, `export '${e.name}' is read-only`);
  const size = e.drive.length;
  if (req.type !== P.NBD_CMD_FLUSH && (req.offset > size || req.length > size - req.offset)) {
    // QEMU: writing past the end is "no space", any other access past it is invalid.
    const err = req.type === P.NBD_CMD_WRITE || req.type === P.NBD_CMD_WRITE_ZEROES ? P.NBD_ENOSPC : P.NBD_EINVAL;
    throw new RequestError(err, `offset ${offsetText(req)} + length ${req.length} beyond the export size ${size}`);
  }
  const valid = VALID_FLAGS[req.type] ?? 0;
  if (req.flags & ~valid) throw new RequestError(P.NBD_EINVAL, `flags 0x${req.flags.toString(16)} not valid for command ${req.type}`);
  if (req.type === P.NBD_CMD_READ && req.length > maxRequest) {
    throw new RequestError(P.NBD_EINVAL, `read of ${req.length} bytes exceeds the maximum ${maxRequest}`);
  }
  if (req.type === P.NBD_CMD_BLOCK_STATUS) {
    if (!contexts) throw new RequestError(P.NBD_EINVAL, 'NBD_CMD_BLOCK_STATUS without a negotiated metadata context');
    if (req.length === 0) throw new RequestError(P.NBD_EINVAL, 'NBD_CMD_BLOCK_STATUS of length 0');
  }
}

/** NBD_CMD_TRIM: a discard, which a drive may not support (it is a hint). */
export async function trim(drive: Drive, req: P.NbdRequest): Promise<void> {
  try {
    await drive.discard(req.offset, req.length);
  } catch (e) {
    // A discard is a hint: a drive that cannot discard has done nothing wrong.
    if (!isBlockError(e, 'ENOTSUP')) throw e;
  }
  if (req.flags & P.NBD_CMD_FLAG_FUA) await drive.flush();
}

/** NBD_CMD_WRITE_ZEROES, with FAST_ZERO honoured only where the range already reads as zeros. */
export async function writeZeroes(drive: Drive, req: P.NbdRequest): Promise<void> {
  if (req.flags & P.NBD_CMD_FLAG_FAST_ZERO) {
    // The drive cannot promise a fast zeroing, except where the range already reads as zeros.
    if (!(await allZero(drive, req.offset, req.length))) {
      throw new RequestError(P.NBD_ENOTSUP, 'fast zeroing is not available for this range');
    }
    return;
  }
  if (req.length > 0) await drive.writeZeroes(req.offset, req.length);
  if (req.flags & P.NBD_CMD_FLAG_FUA) await drive.flush();
}

async function allZero(drive: Drive, offset: number, length: number): Promise<boolean> {
  const end = offset + length;
  for (let pos = offset; pos < end; ) {
    const s = await drive.blockStatus(pos, end - pos);
    if (!s.zero || !(s.length > 0)) return false;
    pos += s.length;
  }
  return true;
}
