// qemu-img create's qcow2 layout laid onto a node the caller opened (an opfs or memory node),
// with nothing from the host's file system: the browser build's way to make images and
// persistent overlays. Backing images are named by URL there (the http driver).
import { planQcow2 } from '../drivers/qcow2/create-layout.js';
import { BlockError } from '../errors.js';
import { imageOptions } from '../image-options.js';
import type { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import type { CreateOptionsInput } from '../options/create.js';

/** Options of {@link layQcow2Image}: qemu-img create's qcow2 options. */
export type NodeQcow2Options = Omit<CreateOptionsInput, 'format'> & { format?: 'qcow2' };

/**
 * Makes `node` (writable, growable: its old content goes) a new, empty qcow2 image, byte for
 * byte what qemu-img create writes. A backing image (`backing`: a URL, stored as given) is
 * opened in `layer` for its size and format when `size` or `backingFormat` is not given.
 * Returns the virtual size and the image's length.
 */
export async function layQcow2Image(layer: BlockLayer, node: BlockNode, input: NodeQcow2Options): Promise<{ virtualSize: number; fileLength: number; backingFormat?: string }> {
  // loaded here: building qemu-img create's option schemas would cost every start of the bundle
  const { parseCreateOptions, qcow2Settings } = await import('../options/create.js');
  const o = parseCreateOptions({ ...input, format: 'qcow2' });
  let size = o.size;
  let backingFormat: string | undefined = o.backingFormat;
  if (o.backing !== undefined && (size === undefined || backingFormat === undefined)) {
    const b = await layer.openNode(imageOptions(o.backing, backingFormat === undefined ? {} : { format: backingFormat }));
    try {
      size ??= b.length;
      backingFormat ??= b.driver.name;
    } finally {
      await b.unref();
    }
  }
  if (backingFormat !== undefined && backingFormat !== 'qcow2' && backingFormat !== 'raw') {
    throw new BlockError('ENOTSUP', `backing: '${o.backing}' is a ${backingFormat} image; a qcow2 overlay takes a qcow2 or raw backing file`, { field: 'backingFormat' });
  }
  const settings = qcow2Settings({ ...o, ...(backingFormat === undefined ? {} : { backingFormat: backingFormat as 'qcow2' | 'raw' }) }, size!);
  if (settings.preallocation !== 'off' || settings.dataFile !== undefined) {
    throw new BlockError('ENOTSUP', 'on a node, only preallocation=off without a data file (the file tool createImage has the rest)', { field: settings.dataFile === undefined ? 'preallocation' : 'dataFile' });
  }
  const plan = planQcow2(settings);
  // emptied, then grown: every byte the layout does not write reads as zeros
  await node.truncate(0, { shrink: true });
  await node.truncate(plan.fileLength, { shrink: false });
  for (const w of plan.writes) await node.write(w.offset, w.data);
  await node.flush();
  return { virtualSize: settings.size, fileLength: plan.fileLength, ...(backingFormat === undefined ? {} : { backingFormat }) };
}
