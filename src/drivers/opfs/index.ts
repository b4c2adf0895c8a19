// The opfs protocol driver (browser build): a file in the Origin Private File System, reached
// through a sync access handle in a dedicated Worker, through the async API elsewhere.
import { BlockError } from '../../errors.js';
import { defineDriver, type DriverInstance } from '../../node/driver.js';
import { asyncFileInstance } from './async-file.js';
import { fromDomError } from './dom-errors.js';
import { opfsFacts, pathComponents } from './facts.js';
import { storageFacts } from './storage-facts.js';
import { syncFileInstance } from './sync-file.js';
import { takeWebLock } from './web-lock.js';
import { type DirectoryHandle, type FileHandle, type SyncAccessHandle, webNavigator } from './web-types.js';

/** Web Lock names: one per file, shared by every page and worker of the origin. */
const LOCK_PREFIX = 'blocklayer:opfs:';

export const opfsDriver = defineDriver({
  name: opfsFacts.name,
  capabilities: opfsFacts.capabilities,
  get schema() {
    return opfsFacts.schema();
  },
  async open({ options, readOnly, nodeName }): Promise<DriverInstance> {
    const names = pathComponents(options.path) as string[];
    const path = names.join('/');
    const ctx = { node: nodeName, path };
    const nav = webNavigator();
    if (typeof nav.storage?.getDirectory !== 'function') {
      throw new BlockError('ENOTSUP', `opfs: this runtime has no Origin Private File System (navigator.storage.getDirectory) for '${path}'`, { ...ctx, field: 'driver' });
    }
    const create = options.create && !readOnly;
    let release = async () => {};
    let locking = 'off';
    if (options.locking === 'on') {
      if (nav.locks) {
        release = await takeWebLock(nav.locks, LOCK_PREFIX + path, readOnly ? 'shared' : 'exclusive', ctx);
        locking = 'web-locks';
      } else {
        locking = 'unavailable';
      }
    }
    try {
      const handle = await fileHandle(await nav.storage.getDirectory(), names, create, path, nodeName);
      const info = { path, locking, ...(await storageFacts(nav.storage, !readOnly)) };
      const facts = { path, node: nodeName, writable: !readOnly, info, release };
      const canSync = typeof handle.createSyncAccessHandle === 'function';
      if (options.mode === 'sync' && !canSync) {
        throw new BlockError('ENOTSUP', `opfs: mode 'sync' needs FileSystemSyncAccessHandle, which exists only in a dedicated Worker`, { ...ctx, field: 'mode' });
      }
      if (options.mode === 'async' || !canSync) {
        const instance = await asyncFileInstance(handle, facts);
        if (create && options.size > 0 && instance.length() === 0) await instance.truncate?.(options.size, { shrink: false });
        return instance;
      }
      let sync: SyncAccessHandle;
      try {
        sync = await handle.createSyncAccessHandle!({ mode: readOnly ? 'read-only' : 'readwrite' });
      } catch (e) {
        throw fromDomError(e, `opfs: could not open '${path}'${readOnly ? '' : ' read-write'}`, ctx);
      }
      const instance = syncFileInstance(sync, facts);
      if (create && options.size > 0 && instance.length() === 0) {
        try {
          await instance.truncate?.(options.size, { shrink: false });
        } catch (e) {
          sync.close();
          throw e;
        }
      }
      return instance;
    } catch (e) {
      await release();
      throw e;
    }
  },
});

/** The file at `names` under `root`; with `create`, it and its folders are made when missing. */
async function fileHandle(root: DirectoryHandle, names: string[], create: boolean, path: string, node: string): Promise<FileHandle> {
  let dir = root;
  for (let i = 0; i < names.length - 1; i++) {
    try {
      dir = await dir.getDirectoryHandle(names[i], { create });
    } catch (e) {
      throw fromDomError(e, `opfs: could not open folder '${names.slice(0, i + 1).join('/')}' of '${path}'`, { node, path, field: 'path' });
    }
  }
  try {
    return await dir.getFileHandle(names[names.length - 1], { create });
  } catch (e) {
    const err = fromDomError(e, `opfs: could not open '${path}'`, { node, path, field: 'path' });
    // a folder where the file should be
    if (err.code === 'ENOTDIR') throw new BlockError('EISDIR', `opfs: '${path}' is a folder, not a file`, { node, path, field: 'path', cause: e });
    throw err;
  }
}
