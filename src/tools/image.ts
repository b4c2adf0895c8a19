import { imageOptions, probeImageFormat } from '../image-options.js';
import { type DriveOptions, BlockLayer } from '../layer.js';
import { PROBE_DRIVER } from '../node/probe.js';

/**
 * {@link imageOptions} with the format already probed (a short-lived protocol node in a private
 * layer reads the image's first bytes): the tree names `qcow2` or `raw` as they were found.
 * @deprecated Use `imageOptions`: its `driver: 'auto'` probes once, over the node that stays open.
 */
export async function targetOptions(target: string, opts: { format?: string; snapshot?: string } = {}): Promise<DriveOptions> {
  const options = imageOptions(target, opts);
  if (options.driver !== PROBE_DRIVER) return options as DriveOptions;
  const format = await withPrivateLayer((layer) => probeImageFormat((o) => layer.openNode(o), layer.drivers.list(), options.file as DriveOptions));
  return imageOptions(target, { ...opts, format }) as DriveOptions;
}

/**
 * The format of an NBD export (nbd driver options without `driver`), by its first bytes.
 * @deprecated Open `{ driver: 'auto', file: { driver: 'nbd', … } }`: it probes over the node it keeps.
 */
export function probeNbdFormat(options: Record<string, unknown>): Promise<string> {
  return withPrivateLayer((layer) => probeImageFormat((o) => layer.openNode(o), layer.drivers.list(), { ...options, driver: 'nbd' }));
}

async function withPrivateLayer<T>(run: (layer: BlockLayer) => Promise<T>): Promise<T> {
  const layer = new BlockLayer();
  try {
    return await run(layer);
  } finally {
    await layer.close();
  }
}
