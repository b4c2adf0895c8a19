// The block layer of persistent.html, in a dedicated Worker: here the opfs driver has
// FileSystemSyncAccessHandle, its fast path. The page reaches the layer through the MessagePort it
// sends first (blocklayer/worker), and asks this script on `self` to lay or delete the overlay,
// which needs the layer's nodes, not only its drives.
import { BlockLayer, layQcow2Image, serveWorkerLayer } from '/dist/blocklayer.js';

const layer = new BlockLayer();

/** Lays an empty qcow2 over `backing` (a URL, stored in its header) at `path`, unless an earlier visit left one there. */
async function prepare({ path, backing }) {
  const file = await layer.openNode({ driver: 'opfs', path, create: true });
  try {
    // a file the open just made is empty: a first visit, or the one after a reset
    if (file.length > 0) return { created: false };
    const { virtualSize } = await layQcow2Image(layer, file, { backing });
    return { created: true, virtualSize };
  } finally {
    await file.unref();
  }
}

/** Deletes the overlay at `path` (its drive closed first: no access handle or lock holds it); false when there was none. */
async function remove({ path }) {
  const names = path.split('/');
  let dir = await navigator.storage.getDirectory();
  try {
    for (const name of names.slice(0, -1)) dir = await dir.getDirectoryHandle(name);
    await dir.removeEntry(names.at(-1));
    return true;
  } catch (e) {
    if (e?.name === 'NotFoundError') return false;
    throw e;
  }
}

const calls = { prepare, remove };

self.addEventListener('message', ({ data }) => {
  if (data.port !== undefined) serveWorkerLayer(data.port, layer);
  if (data.call === undefined) return;
  const { id, op, args } = data.call;
  calls[op](args).then(
    (result) => self.postMessage({ id, result }),
    (e) => self.postMessage({ id, error: { code: e?.code, message: String(e?.message ?? e) } }),
  );
});
