import { BlockError } from '../../errors.js';
import type { OpenContext } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { dirName, isAbsolutePath, joinPath, realPath } from '../../platform/files.js';
import { locationOf } from '../qcow2/backing.js';
import * as L from './limits.js';
import type { VhdxMetadata } from './metadata.js';

/** Deepest chain of differencing images we open (loops are refused before that). */
export const MAX_CHAIN_DEPTH = 64;

/** A parent locator's path in POSIX form: backslashes become slashes (VHDX stores Windows paths). */
function posix(p: string): string {
  return p.replace(/\\/g, '/');
}

/**
 * Where the parent may be, in the spec's order: `relative_path` (against the image's directory),
 * then `absolute_win32_path` when it is an absolute POSIX path once its backslashes are slashes.
 * `volume_path` names a Windows volume and is skipped.
 */
export function parentCandidates(entries: Record<string, string>, imageDir: string | undefined): string[] {
  const out: string[] = [];
  const rel = entries.relative_path;
  if (rel !== undefined && imageDir !== undefined) out.push(joinPath(imageDir, posix(rel).replace(/^\.\//, '')));
  const abs = entries.absolute_win32_path;
  if (abs !== undefined && isAbsolutePath(posix(abs))) out.push(posix(abs));
  return out;
}

/** A GUID as VHDX writes it in a locator: `{xxxxxxxx-…}`, compared without braces or case. */
export function sameLinkage(a: string, b: string): boolean {
  const norm = (s: string) => s.replace(/[{}]/g, '').toLowerCase();
  return norm(a) === norm(b);
}

type ParentContext = Pick<OpenContext<{ backingChain: string[] }>, 'children' | 'disabledChildren' | 'openChild' | 'options' | 'nodeName'>;

/**
 * The parent of a differencing image: given as the `backing` child, disabled with `backing: null`
 * (then blocks without data read as zeros), or found through the parent locator: a VHDX whose
 * data write GUID is the locator's `parent_linkage` (a parent changed since would give wrong data).
 */
export async function openParent(ctx: ParentContext, file: BlockNode, meta: VhdxMetadata): Promise<BlockNode | undefined> {
  const { nodeName } = ctx;
  const given = ctx.children.get('backing');
  if (given || ctx.disabledChildren.has('backing')) return given;
  const locator = meta.parentLocator!;
  if (locator.type !== L.PARENT_VHDX_GUID) throw new BlockError('ENOTSUP', `vhdx: parent locator type ${locator.type} is not a VHDX parent`, { node: nodeName, field: 'parent_locator' });
  const linkage = locator.entries.parent_linkage;
  if (linkage === undefined) throw new BlockError('ECORRUPT', 'vhdx: the parent locator has no parent_linkage', { node: nodeName, field: 'parent_linkage' });
  const image = locationOf(file);
  if (image !== undefined && image.kind !== 'file') throw new BlockError('ENOTSUP', 'vhdx: parents are found for images in local files only', { node: nodeName, field: 'parent_locator' });
  const self = image ? await realPath(image.name).catch(() => image.name) : undefined;
  const chain = [...ctx.options.backingChain, ...(self ? [self] : [])];
  for (const candidate of parentCandidates(locator.entries, image ? dirName(image.name) : undefined)) {
    const real = await realPath(candidate).catch(() => undefined);
    if (real === undefined) continue;
    if (chain.includes(real)) throw new BlockError('ECORRUPT', `vhdx: parent chain loops: ${[...chain, real].join(' -> ')}`, { node: nodeName, field: 'parent_locator', path: real });
    if (chain.length >= MAX_CHAIN_DEPTH) throw new BlockError('ENOTSUP', `vhdx: parent chain deeper than ${MAX_CHAIN_DEPTH} images at '${candidate}'`, { node: nodeName, field: 'parent_locator', path: real });
    const forceShare = file.options.forceShare === true;
    const parent = await ctx.openChild('backing', { driver: 'vhdx', readOnly: true, backingChain: chain, file: { driver: 'file', filename: candidate, readOnly: true, ...(forceShare ? { forceShare } : {}) } });
    const guid = parent.info().dataWriteGuid as string;
    if (!sameLinkage(guid, linkage)) {
      throw new BlockError('ECORRUPT', `vhdx: parent '${candidate}' has data write GUID ${guid}, not the parent_linkage ${linkage}: it changed since this image was made`, { node: nodeName, field: 'parent_linkage', path: candidate });
    }
    return parent;
  }
  throw new BlockError('ENOENT', `vhdx: could not find the parent of this differencing image (tried: ${parentCandidates(locator.entries, image ? dirName(image.name) : undefined).join(', ') || 'no usable path'})`, { node: nodeName, field: 'parent_locator' });
}
