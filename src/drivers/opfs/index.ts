// The opfs protocol driver (browser build): a file in the Origin Private File System, reached
// through a sync access handle in a dedicated Worker, through the async API elsewhere.
import { BlockError } from '../../errors.js';
import { defineDriver, type DriverInstance } from '../../node/driver.js';
import { type AsyncFileInstance, asyncFileInstance } from './async-file.js';
import { fromDomError } from './dom-errors.js';
import { opfsFacts, pathComponents } from './facts.js';
import { storageFacts } from './storage-facts.js';
import { type SyncFileInstance, syncFileInstance } from './sync-file.js';
import { takeWebLock } from './web-lock.js';
import { type DirectoryHandle, type FileHandle, type LockManager, type StorageManager, type SyncAccessHandle, webNavigator } from './web-types.js';

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
    const nav = webNavigator();
    if (typeof nav.storage?.getDirectory !== 'function') {
      throw new BlockError('ENOTSUP', `opfs: this runtime has no Origin Private File System (navigator.storage.getDirectory) for '${path}'`, { node: nodeName, path, field: 'driver' });
    }
    const where: Where = { names, path, node: nodeName, mode: options.mode, locking: options.locking === 'on', storage: nav.storage, locks: nav.locks };
    return openFile(where, readOnly, options.create && !readOnly ? options.size : undefined);
  },
});

/** What an open of one opfs path needs, again at a reopen. */
interface Where {
  readonly names: string[];
  readonly path: string;
  readonly node: string;
  readonly mode: 'auto' | 'sync' | 'async';
  readonly locking: boolean;
  readonly storage: StorageManager;
  readonly locks: LockManager | undefined;
}

/** The file opened (made, `createSize` bytes long, when `createSize` is given) with its Web Lock. */
async function openFile(w: Where, readOnly: boolean, createSize?: number): Promise<DriverInstance> {
  const { path, node } = w;
  const ctx = { node, path };
  const create = createSize !== undefined;
  // The lock, the folder walk and the storage estimate are separate round trips to the browser:
  // overlapped, not one after the other (only the access handle needs the lock held; persistence
  // is asked for by a writer that got its lock).
  const lockWanted = w.locking && w.locks !== undefined;
  const taking = lockWanted ? takeWebLock(w.locks!, LOCK_PREFIX + path, readOnly ? 'shared' : 'exclusive', ctx) : undefined;
  const finding = w.storage.getDirectory().then((root) => fileHandle(root, w.names, create, path, node));
  // its failure is thrown below, or dropped when the lock fails first: never unhandled meanwhile
  finding.catch(() => undefined);
  let release = async () => {};
  const locking = !w.locking ? 'off' : lockWanted ? 'web-locks' : 'unavailable';
  // the lock decides first, as when it was taken before anything else
  if (taking !== undefined) release = await taking;
  const storage = storageFacts(w.storage, !readOnly);
  try {
    const handle = await finding;
    const canSync = typeof handle.createSyncAccessHandle === 'function';
    if (w.mode === 'sync' && !canSync) {
      throw new BlockError('ENOTSUP', `opfs: mode 'sync' needs FileSystemSyncAccessHandle, which exists only in a dedicated Worker`, { ...ctx, field: 'mode' });
    }
    if (w.mode === 'async' || !canSync) {
      const facts = { path, node, writable: !readOnly, info: { path, locking, ...(await storage) }, release };
      const instance = await asyncFileInstance(handle, facts);
      if (create && createSize > 0 && instance.length() === 0) await instance.truncate?.(createSize, { shrink: false });
      instance.reopen = (ro) => reopenInstance(w, instance, ro, (back: AsyncFileInstance) => instance.rebind(back.handoff()));
      return instance;
    }
    // the access handle and the storage estimate are two round trips to the browser: overlapped
    // (storageFacts never rejects; the handle's failure is the open's)
    const [opened, estimate] = await Promise.all([
      handle.createSyncAccessHandle!({ mode: readOnly ? 'read-only' : 'readwrite' }).then(
        (sync) => ({ sync }),
        (e: unknown) => ({ error: e }),
      ),
      storage,
    ]);
    if ('error' in opened) throw fromDomError(opened.error, `opfs: could not open '${path}'${readOnly ? '' : ' read-write'}`, ctx);
    const sync: SyncAccessHandle = opened.sync;
    const facts = { path, node, writable: !readOnly, info: { path, locking, ...estimate }, release };
    const instance = syncFileInstance(sync, facts);
    if (create && createSize > 0 && instance.length() === 0) {
      try {
        await instance.truncate?.(createSize, { shrink: false });
      } catch (e) {
        sync.close();
        throw e;
      }
    }
    instance.reopen = (ro) => reopenInstance(w, instance, ro, (back: SyncFileInstance) => instance.rebind(...back.handoff()));
    return instance;
  } catch (e) {
    await release();
    throw e;
  }
}

/**
 * The node read-only or read-write on a new handle and lock (a commit job writing its base): a
 * read-write sync access handle or an exclusive lock admits no other, so the old ones go first
 * (the async instance commits its waiting writes at close); if the new mode cannot be had, the
 * instance goes back onto a handle and lock in its old mode, taken over from a fresh open.
 */
async function reopenInstance<T extends DriverInstance>(w: Where, instance: T, readOnly: boolean, adopt: (back: T) => void): Promise<DriverInstance> {
  await instance.close();
  try {
    return await openFile(w, readOnly);
  } catch (e) {
    // the old instance serves on, in its old mode, with the handle and lock just taken for it
    const back = (await openFile(w, !readOnly).catch(() => undefined)) as T | undefined;
    if (back) adopt(back);
    throw e;
  }
}

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
