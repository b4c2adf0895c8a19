import { BlockError } from '../../errors.js';
import type { OpenContext } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { realPath } from '../../platform/files.js';
import { locationOf } from '../qcow2/backing.js';
import * as L from './limits.js';
import { namedFileOptions } from './open-extents.js';

type ParentContext = Pick<OpenContext<{ backingChain: string[] }>, 'children' | 'disabledChildren' | 'openChild' | 'options' | 'nodeName'>;

/** One name per image for loop detection: the real path of a file, a URL itself. */
async function identity(node: { driver: string; filename?: unknown; url?: unknown }): Promise<string | undefined> {
  if (node.driver === 'http') return String(node.url);
  if (typeof node.filename !== 'string') return undefined;
  const name = node.filename;
  return realPath(name).catch((e) => {
    throw new BlockError('ENOENT', `vmdk: could not open parent '${name}': ${(e as Error).message}`, { path: name, field: 'parentFileNameHint', cause: e });
  });
}

/**
 * The parent image (QEMU: the backing file named by parentFileNameHint, always a vmdk): given as
 * a child, disabled with backing: null, or opened read-only beside the image; loops and chains
 * deeper than {@link L.MAX_CHAIN_DEPTH} are refused.
 */
export async function openParent(ctx: ParentContext, file: BlockNode, hint: string | undefined): Promise<BlockNode | undefined> {
  const given = ctx.children.get('backing');
  if (given || hint === undefined || ctx.disabledChildren.has('backing')) return given;
  const fileOptions = namedFileOptions(file, hint, true, 'parentFileNameHint');
  const real = await identity(fileOptions as { driver: string });
  const here = locationOf(file);
  const self = here ? await identity(here.kind === 'url' ? { driver: 'http', url: here.name } : { driver: 'file', filename: here.name }).catch(() => here.name) : undefined;
  const chain = [...ctx.options.backingChain, ...(self ? [self] : [])];
  if (real !== undefined && chain.includes(real)) {
    throw new BlockError('ECORRUPT', `vmdk: parent chain loops: ${[...chain, real].join(' -> ')}`, { field: 'parentFileNameHint', path: real });
  }
  if (chain.length >= L.MAX_CHAIN_DEPTH) {
    throw new BlockError('ENOTSUP', `vmdk: parent chain deeper than ${L.MAX_CHAIN_DEPTH} images at '${hint}'`, { field: 'parentFileNameHint', path: real });
  }
  return ctx.openChild('backing', { driver: 'vmdk', readOnly: true, file: fileOptions, backingChain: chain });
}

/**
 * Whether reads may fall through to `parent` (QEMU vmdk_is_cid_valid): it must be a vmdk whose
 * CID is the parentCID this image recorded; otherwise the parent changed under the image.
 */
export function checkParentCid(parent: BlockNode, parentCid: number | undefined, nodeName: string): void {
  const cid = parent.driver.name === 'vmdk' ? parent.info().cid : undefined;
  if (cid === undefined || cid !== parentCid) {
    throw new BlockError('EINVAL', `vmdk: the parent '${parent.name}' has CID ${cid === undefined ? 'none' : (cid as number).toString(16)}, this image expects ${parentCid?.toString(16) ?? 'none'}: the parent changed`, {
      field: 'parentCID',
      node: nodeName,
    });
  }
}
