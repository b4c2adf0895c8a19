import { type DriverInstance, defineDriver } from '../../node/driver.js';
import { fromErrno } from '../../errors.js';
import { PROBE_HEAD_BYTES } from '../../node/probe.js';
import { readFileHead } from '../../platform/files.js';
import { hasQcow2Magic } from './backing.js';
import { checkAndRepair } from './check.js';
import { qcow2Facts } from './facts.js';
import { qcow2Instance } from './instance.js';
import { openChildren } from './open-children.js';
import { readImage } from './open-image.js';

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
    const image = await readImage(file, writable, nodeName, options);
    const { dataNode, backing } = await openChildren(ctx, file, image.h, writable);
    return qcow2Instance({ nodeName, snapshot: options.snapshot, options, file, ...image, dataNode, backing });
  },
});
