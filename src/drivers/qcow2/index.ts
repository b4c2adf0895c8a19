import { type DriverInstance, defineDriver } from '../../node/driver.js';
import { fromErrno } from '../../errors.js';
import { PROBE_HEAD_BYTES } from '../../node/probe.js';
import { readFileHead } from '../../platform/files.js';
import { hasQcow2Magic } from './backing.js';
import { readBitmapDirectory } from './bitmaps.js';
import { checkAndRepair } from './check.js';
import { qcow2Facts } from './facts.js';
import { qcow2Instance } from './instance.js';
import { L2Cache } from './l2-cache.js';
import { openChildren } from './open-children.js';
import { loadL1, metadataReader, openHeader, openRefcounts } from './open-steps.js';
import { readSnapshots } from './snapshots.js';
import { ClusterMap } from './tables.js';

/** The format of an image file by its first bytes, as `driver: 'auto'` probes: qcow2 by its magic, else raw. */
export async function probeFormat(filename: string): Promise<'qcow2' | 'raw'> {
  const head = await readFileHead(filename, PROBE_HEAD_BYTES).catch((e) => {
    throw fromErrno(e, `could not probe the format of '${filename}'`, { path: filename });
  });
  return hasQcow2Magic(head) ? 'qcow2' : 'raw';
}

/** The qcow2 format: v2 and v3, compression, backing chains, subclusters, external data files, snapshots; writes to v2/v3 images. */
export const qcow2Driver = defineDriver({
  name: qcow2Facts.name,
  capabilities: qcow2Facts.capabilities,
  schema: qcow2Facts.schema(),
  probe: qcow2Facts.probe,
  children: qcow2Facts.children,
  check: checkAndRepair,
  async open(ctx): Promise<DriverInstance> {
    const { options, nodeName } = ctx;
    const file = ctx.children.get('file')!;
    // Writable unless the node is read-only or a snapshot is open (snapshots are read-only, as qemu-img -l).
    const writable = !ctx.readOnly && options.snapshot === undefined;
    const h = await openHeader(file, writable, nodeName);
    const read = metadataReader(file);
    const snapshots = await readSnapshots(h, read);
    const bitmaps = await readBitmapDirectory(h, read);
    const { l1, l1Offset } = await loadL1(file, h, snapshots, options.snapshot, nodeName);
    const refcounts = writable ? await openRefcounts(file, h, options.refcountCacheSize) : undefined;
    const l2Cache = new L2Cache(h.clusterSize, read, options.l2CacheSize);
    const fileLimit = () => Math.max(file.length, refcounts?.end ?? 0);
    const tables = new ClusterMap(h, l1, l1Offset, fileLimit, l2Cache);
    const { dataNode, backing } = await openChildren(ctx, file, h, writable);
    return qcow2Instance({ nodeName, snapshot: options.snapshot, file, h, size: h.size, l1, l1Offset, snapshots, bitmaps, refcounts, l2Cache, tables, dataNode, backing });
  },
});
