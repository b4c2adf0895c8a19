import fs from 'node:fs/promises';
import { BlockError, fromErrno } from '../../errors.js';
import type { Qcow2File } from '../qcow2/image-file.js';
import { imagePermissions, lockImage } from './qemu-lock.js';

/** An image file opened for the qcow2 checker: positional I/O that may grow the file, and QEMU's image lock. */
export interface OpenImageFile extends Qcow2File {
  close(): Promise<void>;
}

/**
 * Opens `filename` for a check (read-only) or a repair (read-write), as
 * qemu-img check does (QEMU's lock bytes). Unlike the file driver's nodes, writes may go past the end (a refcount
 * rebuild appends). File systems without locks are tolerated, as with locking=auto.
 */
export async function openImageFile(filename: string, writable: boolean): Promise<OpenImageFile> {
  const ctx = { path: filename, field: 'filename' };
  const fh = await fs.open(filename, writable ? 'r+' : 'r').catch((e) => {
    throw fromErrno(e, `could not open '${filename}'${writable ? ' read-write' : ''}`, ctx);
  });
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new BlockError('EINVAL', `'${filename}' is not a regular file`, ctx);
    // What qemu-img check takes: a qcow2 node's locks on its file (a repair may grow it).
    await lockImage(fh.fd, filename, imagePermissions(writable, true), 'auto', { field: 'filename' });
    let size = st.size;
    return {
      get length() {
        return size;
      },
      async read(offset, buffer) {
        let done = 0;
        while (done < buffer.length) {
          const { bytesRead } = await fh.read(buffer, done, buffer.length - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        buffer.fill(0, done);
      },
      async write(offset, data) {
        if (!writable) throw new BlockError('EROFS', `'${filename}' is open read-only`, ctx);
        let done = 0;
        while (done < data.length) done += (await fh.write(data, done, data.length - done, offset + done)).bytesWritten;
        size = Math.max(size, offset + data.length);
      },
      async truncate(newSize) {
        if (!writable) throw new BlockError('EROFS', `'${filename}' is open read-only`, ctx);
        await fh.truncate(newSize);
        size = newSize;
      },
      flush: () => (writable ? fh.datasync() : Promise.resolve()),
      close: () => fh.close(),
    };
  } catch (e) {
    await fh.close();
    throw e;
  }
}
