/** Stable error codes carried by every {@link BlockError}. */
export type BlockErrorCode =
  | 'EINVAL' // bad options or an out-of-range request
  | 'EIO' // the backend failed
  | 'EROFS' // write to a read-only node
  | 'ENOSPC' // backend out of space
  | 'ENOENT' // file, image, pool or group not found
  | 'EACCES' // permission denied
  | 'ELOCKED' // image locked by another user
  | 'ECORRUPT' // image metadata is inconsistent
  | 'ENOTSUP' // feature or operation not supported
  | 'ECANCELED' // request aborted before it reached the driver
  | 'ECLOSED' // drive or node already closed (or closing)
  | 'EBUSY' // object still in use
  | 'EISDIR' // a directory where a file or device was expected
  | 'ENOTDIR' // a component of the path is not a directory
  | 'ELOOP' // too many symbolic links while resolving the path
  | 'ENAMETOOLONG' // the path, or one of its components, is too long
  | 'EMFILE' // out of file descriptors, in the process or in the whole system
  | 'EFBIG' // file, size or offset too large for the host or the file system
  | 'EEXIST' // file or object already exists
  | 'ENXIO' // device or address not there (device gone, no such device)
  | 'EBADF' // file descriptor not open, or not open for this access
  | 'ENOMEM' // the host is out of memory
  | 'ESTALE'; // the remote object changed since it was opened (an http file with a new ETag): its data would mix two versions

/** Where an error happened: which node, file, field, offset. */
export interface BlockErrorContext {
  /** Node name or driver of the node that failed. */
  node?: string;
  /** File or image path involved. */
  path?: string;
  /** Option field (dotted path) that was rejected. */
  field?: string;
  /** Byte offset of the request or of the bad metadata. */
  offset?: number;
  /** Byte length of the request. */
  length?: number;
  /** The underlying error (errno error, zod error, …). */
  cause?: unknown;
}

/** The one error type of the library: a stable `code`, a readable message and context. */
export class BlockError extends Error {
  /** Always 'BlockError'. */
  override readonly name = 'BlockError';
  /** What went wrong, stable across versions: match on this, not on the message. */
  readonly code: BlockErrorCode;
  /** Node name or driver of the node that failed. */
  readonly node?: string;
  /** File or image path involved. */
  readonly path?: string;
  /** Option field (dotted path) that was rejected. */
  readonly field?: string;
  /** Byte offset of the request or of the bad metadata. */
  readonly offset?: number;
  /** Byte length of the request. */
  readonly length?: number;

  /** An error with `code`, `message` and where it happened; `context.cause` becomes the standard `cause`. */
  constructor(code: BlockErrorCode, message: string, context: BlockErrorContext = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.code = code;
    if (context.node !== undefined) this.node = context.node;
    if (context.path !== undefined) this.path = context.path;
    if (context.field !== undefined) this.field = context.field;
    if (context.offset !== undefined) this.offset = context.offset;
    if (context.length !== undefined) this.length = context.length;
  }
}

/**
 * A caller's value in a message, as given: an integer past 2^53 with all its digits (2 ** 63 as
 * 9223372036854775808, where String() would print 9223372036854776000), a string quoted,
 * anything else by its kind. Never throws, whatever the value.
 */
export function valueText(value: unknown): string {
  if (typeof value === 'number' && Number.isInteger(value) && !Number.isSafeInteger(value)) return BigInt(value).toString();
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean' || value === undefined || value === null) return String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'object') return Array.isArray(value) ? '(an array)' : '(an object)';
  return `(a ${typeof value})`;
}

/** True if `e` is a BlockError, optionally with the given code. */
export function isBlockError(e: unknown, code?: BlockErrorCode): e is BlockError {
  return e instanceof BlockError && (code === undefined || e.code === code);
}

/** Node.js errno names to codes: an errno names its own code, or the one code of its kind. */
const ERRNO_CODES: Readonly<Record<string, BlockErrorCode>> = {
  EIO: 'EIO',
  ENOENT: 'ENOENT',
  EACCES: 'EACCES',
  EPERM: 'EACCES',
  EROFS: 'EROFS',
  ENOSPC: 'ENOSPC',
  EDQUOT: 'ENOSPC',
  EINVAL: 'EINVAL',
  // Seeking where no seek is possible (a pipe or socket): the file is of the wrong kind.
  ESPIPE: 'EINVAL',
  ENOTSUP: 'ENOTSUP',
  EOPNOTSUPP: 'ENOTSUP',
  ENOSYS: 'ENOTSUP',
  ENOTTY: 'ENOTSUP',
  // No lock records left: locking is unavailable here, not held by someone else.
  ENOLCK: 'ENOTSUP',
  EAGAIN: 'ELOCKED',
  EWOULDBLOCK: 'ELOCKED',
  EBUSY: 'EBUSY',
  ETXTBSY: 'EBUSY',
  // An address (socket path, port) another listener holds.
  EADDRINUSE: 'EBUSY',
  ECANCELED: 'ECANCELED',
  EISDIR: 'EISDIR',
  ENOTDIR: 'ENOTDIR',
  ELOOP: 'ELOOP',
  ENAMETOOLONG: 'ENAMETOOLONG',
  EMFILE: 'EMFILE',
  ENFILE: 'EMFILE',
  EFBIG: 'EFBIG',
  EOVERFLOW: 'EFBIG',
  EEXIST: 'EEXIST',
  ENXIO: 'ENXIO',
  // Nobody listens at the address (an NBD server down): the address is not there.
  ECONNREFUSED: 'ENXIO',
  ENODEV: 'ENXIO',
  EBADF: 'EBADF',
  ENOMEM: 'ENOMEM',
  ENOBUFS: 'ENOMEM',
};

/** The BlockError code for a Node.js errno name (`'ELOOP'` → `'ELOOP'`); `EIO` for an errno the table does not know. */
export function codeForErrno(errno: string): BlockErrorCode {
  return Object.hasOwn(ERRNO_CODES, errno) ? ERRNO_CODES[errno] : 'EIO';
}

/** Wraps a Node.js errno error (or anything thrown) into a BlockError, keeping context. */
export function fromErrno(e: unknown, what: string, context: BlockErrorContext = {}): BlockError {
  if (e instanceof BlockError) return e;
  const errno = (e as NodeJS.ErrnoException | undefined)?.code;
  const code = typeof errno === 'string' ? codeForErrno(errno) : 'EIO';
  const detail = e instanceof Error ? e.message : String(e);
  return new BlockError(code, `${what}: ${detail}`, { ...context, cause: e });
}
