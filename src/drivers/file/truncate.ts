import fs from 'node:fs';
import { BlockError, fromErrno } from '../../errors.js';
import type { PreallocMode } from '../../node/types.js';
import { errnoText, fallocateErrorCode, reserveSpace } from './fallocate.js';

/**
 * Resizes an open file to `newSize` (QEMU file-posix truncate) and returns its new size: ftruncate
 * for `off`, posix_fallocate of the new part for `falloc`, zeros written over it for `full`. A
 * block device keeps its size: only a resize to that size succeeds.
 */
export async function truncateFile(
  fd: number,
  filename: string,
  oldSize: number,
  newSize: number,
  regular: boolean,
  prealloc: PreallocMode,
  zeroFill: (offset: number, length: number) => Promise<void>,
): Promise<number> {
  const ctx = { path: filename, field: 'size' };
  if (!regular) {
    if (newSize === oldSize) return oldSize;
    if (newSize > oldSize) throw new BlockError('EINVAL', `Cannot grow device files ('${filename}' has ${oldSize} bytes)`, ctx);
    throw new BlockError('ENOTSUP', `Cannot shrink device files ('${filename}' keeps its ${oldSize} bytes)`, ctx);
  }
  if (prealloc === 'metadata') throw new BlockError('ENOTSUP', 'Unsupported preallocation mode: metadata', { path: filename, field: 'prealloc' });
  if (prealloc === 'falloc' && newSize > oldSize) {
    // posix_fallocate extends the file itself, with blocks reserved for the new part.
    const errno = await reserveSpace(fd, oldSize, newSize - oldSize);
    if (errno !== 0) throw new BlockError(fallocateErrorCode(errno), `Could not preallocate new data: ${errnoText(errno)} ('${filename}')`, ctx);
    return newSize;
  }
  try {
    await new Promise<void>((resolve, reject) => fs.ftruncate(fd, newSize, (err) => (err ? reject(err) : resolve())));
  } catch (e) {
    throw fromErrno(e, `Failed to resize '${filename}' to ${newSize} bytes`, ctx);
  }
  if (prealloc === 'full' && newSize > oldSize) await zeroFill(oldSize, newSize - oldSize);
  return newSize;
}
