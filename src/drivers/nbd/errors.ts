import { type BlockErrorCode, isBlockError } from '../../errors.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM } from './protocol.js';

/** NBD error values for the BlockError codes that have one of their own; every other code is EIO. */
const NBD_ERRORS: Partial<Readonly<Record<BlockErrorCode, number>>> = {
  EROFS: NBD_EPERM,
  EACCES: NBD_EPERM,
  ENOSPC: NBD_ENOSPC,
  EINVAL: NBD_EINVAL,
  ENOTSUP: NBD_ENOTSUP,
  ENOMEM: NBD_ENOMEM,
};

/** The NBD error to send for a failed request: a BlockError's code mapped, EIO for anything else (never a host errno). */
export function nbdErrorFor(error: unknown): number {
  return (isBlockError(error) && NBD_ERRORS[error.code]) || NBD_EIO;
}

/**
 * The BlockError code for an NBD error value a server sent. EPERM means a refused write on a
 * write-type command (EROFS) and a refused access otherwise (EACCES); unknown values are EIO.
 */
export function blockCodeForNbdError(error: number, write: boolean): BlockErrorCode {
  switch (error) {
    case NBD_EPERM:
      return write ? 'EROFS' : 'EACCES';
    case NBD_ENOSPC:
      return 'ENOSPC';
    case NBD_EINVAL:
      return 'EINVAL';
    case NBD_ENOTSUP:
      return 'ENOTSUP';
    case NBD_ENOMEM:
      return 'ENOMEM';
    default:
      return 'EIO';
  }
}
