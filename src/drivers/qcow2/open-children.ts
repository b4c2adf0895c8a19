import { BlockError } from '../../errors.js';
import type { OpenContext } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { backingOptions, identity, type Location, locationOf, protocolOptions, resolveName } from './backing.js';
import type { Qcow2Header } from './header.js';
import * as L from './limits.js';

/** What opening the children needs of the driver's context. */
type ChildContext = Pick<OpenContext<{ backingChain: string[] }>, 'children' | 'disabledChildren' | 'openChild' | 'options' | 'nodeName'>;

/** Step 6: the external data file and the backing file, given as children or named in the header. */
export async function openChildren(
  ctx: ChildContext,
  file: BlockNode,
  h: Qcow2Header,
  writable: boolean,
): Promise<{ dataNode: BlockNode | undefined; backing: BlockNode | undefined }> {
  const image = locationOf(file);
  // QEMU inherits force-share down the graph: the backing chain and data file share as the image's file does.
  const forceShare = file.options.forceShare === true;
  const dataNode = await openDataFile(ctx, h, image, writable, forceShare);
  const backing = await openBacking(ctx, h, image, forceShare);
  return { dataNode, backing };
}

/** External data file: given as a child, or named in the header. */
async function openDataFile(ctx: ChildContext, h: Qcow2Header, image: Location | undefined, writable: boolean, forceShare: boolean): Promise<BlockNode | undefined> {
  const { nodeName } = ctx;
  const dataNode = ctx.children.get('data-file');
  if (dataNode && !h.hasDataFile) {
    throw new BlockError('EINVAL', `data-file: can only be set for an image with an external data file`, { field: 'data-file', node: nodeName });
  }
  if (dataNode || !(h.incompatible & L.INCOMPAT_DATA_FILE)) return dataNode;
  if (h.dataFile === undefined) {
    throw new BlockError('EINVAL', `data-file: required: the image uses an external data file and its header names none`, { field: 'data-file', node: nodeName });
  }
  return ctx.openChild('data-file', protocolOptions(resolveName(image, h.dataFile, 'data file', nodeName), !writable, forceShare));
}

/** Backing chain: given as a child, disabled with backing: null, or named in the header (loops and depth refused). */
async function openBacking(ctx: ChildContext, h: Qcow2Header, image: Location | undefined, forceShare: boolean): Promise<BlockNode | undefined> {
  const { nodeName } = ctx;
  const given = ctx.children.get('backing');
  if (given || h.backingFile === undefined || ctx.disabledChildren.has('backing')) return given;
  const loc = resolveName(image, h.backingFile, 'backing file', nodeName);
  const real = await identity(loc, nodeName);
  const self = image ? await identity(image, nodeName).catch(() => image.name) : undefined;
  const chain = [...ctx.options.backingChain, ...(self ? [self] : [])];
  if (chain.includes(real)) {
    throw new BlockError('ECORRUPT', `qcow2: backing chain loops: ${[...chain, real].join(' -> ')}`, { field: 'backing_file', path: real });
  }
  if (chain.length >= L.MAX_CHAIN_DEPTH) {
    throw new BlockError('ENOTSUP', `qcow2: backing chain deeper than ${L.MAX_CHAIN_DEPTH} images at '${loc.name}'`, { field: 'backing_file', path: real });
  }
  const format = h.backingFormat;
  // Any format the layer has a driver for (vmdk, vpc, …); an unknown one fails to open by its name.
  // No format in the header: 'auto' probes the backing file over the node it opens.
  return ctx.openChild('backing', backingOptions(loc, format, chain, forceShare));
}
