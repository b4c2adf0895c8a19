import { BlockError, type BlockErrorCode, type BlockErrorContext } from '../../errors.js';

/** DOMException names the File System and Storage standards throw, and our codes for them. */
const CODES: Record<string, BlockErrorCode> = {
  NotFoundError: 'ENOENT',
  TypeMismatchError: 'ENOTDIR',
  QuotaExceededError: 'ENOSPC',
  // another sync access handle or writable holds the file (a page that takes no Web Lock)
  NoModificationAllowedError: 'ELOCKED',
  NotAllowedError: 'EACCES',
  SecurityError: 'EACCES',
  InvalidStateError: 'ECLOSED',
  InvalidModificationError: 'EINVAL',
};

/** A thrown DOMException (or anything else) as a BlockError: quota exhaustion is ENOSPC, so `werror` applies. */
export function fromDomError(e: unknown, message: string, context: BlockErrorContext): BlockError {
  if (e instanceof BlockError) return e;
  const name = (e as { name?: unknown } | null)?.name;
  const code = (typeof name === 'string' && CODES[name]) || 'EIO';
  const why = (e as { message?: unknown } | null)?.message;
  return new BlockError(code, `${message}: ${typeof why === 'string' && why !== '' ? why : String(name ?? e)}`, { ...context, cause: e });
}
