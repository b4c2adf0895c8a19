import { BlockError } from '../../errors.js';
import type { OpenContext } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { dirName, fileExists, isAbsolutePath, joinPath, realPath } from '../../platform/files.js';
import { type Location, locationOf, protocolOptions } from '../qcow2/backing.js';
import { type DynamicHeader, decodeUtf16 } from './dynamic-header.js';
import * as L from './limits.js';

type ParentContext = Pick<OpenContext<{ backingChain: string[] }>, 'children' | 'disabledChildren' | 'openChild' | 'options' | 'nodeName'>;

/** One name a differencing image gives its parent, and where it came from. */
export interface ParentName {
  source: string;
  name: string;
}

/** A locator's path with '/' separators: Windows paths use '\', a relative one may start with '.\'. */
function slashed(p: string): string {
  return p.replace(/\\/g, '/');
}

/**
 * The names of the parent, most trusted first (as Windows resolves them): the relative W2ru
 * locator, the absolute W2ku one, a MacX file URL, then the parent's unicode name in the dynamic
 * header (looked for beside the image). 'Mac ' aliases are opaque blobs and skipped.
 */
export function parentNames(h: DynamicHeader, locatorData: ReadonlyMap<number, Uint8Array>): ParentName[] {
  const out: ParentName[] = [];
  const rank = (p: string) => ['W2ru', 'W2ku', 'MacX'].indexOf(p);
  const ordered = h.locators.map((l, i) => ({ l, i })).filter(({ l }) => rank(l.platform) >= 0);
  ordered.sort((a, b) => rank(a.l.platform) - rank(b.l.platform));
  for (const { l, i } of ordered) {
    const data = locatorData.get(i);
    if (!data) continue;
    let name: string;
    if (l.platform === 'MacX') {
      const text = new TextDecoder().decode(data).replace(/\0+$/, '');
      name = text.startsWith('file://') ? decodeURIComponent(text.replace(/^file:\/\/(localhost)?/, '')) : text;
    } else name = slashed(decodeUtf16(data, true));
    if (name !== '') out.push({ source: `parent locator ${l.platform}`, name });
  }
  if (h.parentName !== '') out.push({ source: 'parent unicode name', name: slashed(h.parentName).split('/').pop()! });
  return out;
}

/** A Windows absolute path ('C:/…', '//server/…') cannot name a file here. */
const windowsAbsolute = (p: string) => /^[a-zA-Z]:\//.test(p) || p.startsWith('//');

/** The first name that resolves to an existing file (relative names against the image's directory). */
function resolveParent(image: Location | undefined, names: ParentName[], nodeName: string): Location {
  const tried: string[] = [];
  for (const { source, name } of names) {
    if (windowsAbsolute(name)) {
      tried.push(`${name} (${source}, a Windows path)`);
      continue;
    }
    if (image?.kind === 'url') return { kind: 'url', name: new URL(name, image.name).href };
    if (!isAbsolutePath(name) && image === undefined) {
      tried.push(`${name} (${source}: relative, and the image is not a file)`);
      continue;
    }
    const path = isAbsolutePath(name) ? name : joinPath(dirName(image!.name), name);
    if (fileExists(path)) return { kind: 'file', name: path };
    tried.push(`${path} (${source})`);
  }
  throw new BlockError('ENOENT', `vpc: the parent of this differencing image was not found; tried: ${tried.join(', ') || 'no parent name or locator'}`, {
    field: 'parent_locator',
    node: nodeName,
  });
}

/** A UUID's 16 bytes as 32 hex digits. */
export const uuidHex = (u: Uint8Array): string => Array.from(u, (x) => x.toString(16).padStart(2, '0')).join('');

/**
 * The parent of a differencing image as its `backing` child: given by the caller, none with
 * `backing: null`, or found through the locators and opened as vpc (loops, depth and a parent
 * whose UUID is not the one recorded refused).
 */
export async function openParent(ctx: ParentContext, file: BlockNode, h: DynamicHeader): Promise<BlockNode | undefined> {
  const given = ctx.children.get('backing');
  if (given || ctx.disabledChildren.has('backing')) return given;
  const locatorData = new Map<number, Uint8Array>();
  for (let i = 0; i < h.locators.length; i++) {
    const l = h.locators[i];
    if (l.dataLength === 0) continue;
    const b = new Uint8Array(l.dataLength);
    await file.read(l.dataOffset, b);
    locatorData.set(i, b);
  }
  const image = locationOf(file);
  const loc = resolveParent(image, parentNames(h, locatorData), ctx.nodeName);
  const real =
    loc.kind === 'url'
      ? loc.name
      : await realPath(loc.name).catch((e) => {
          throw new BlockError('ENOENT', `vpc: could not open the parent '${loc.name}': ${(e as Error).message}`, { field: 'parent_locator', path: loc.name, cause: e });
        });
  const self = image?.kind === 'file' ? await realPath(image.name).catch(() => image.name) : image?.name;
  const chain = [...ctx.options.backingChain, ...(self ? [self] : [])];
  if (chain.includes(real)) {
    throw new BlockError('ECORRUPT', `vpc: differencing chain loops: ${[...chain, real].join(' -> ')}`, { field: 'parent_locator', path: real });
  }
  if (chain.length >= L.MAX_CHAIN_DEPTH) {
    throw new BlockError('ENOTSUP', `vpc: differencing chain deeper than ${L.MAX_CHAIN_DEPTH} images at '${loc.name}'`, { field: 'parent_locator', path: real });
  }
  const forceShare = file.options.forceShare === true;
  const parent = await ctx.openChild('backing', { driver: 'vpc', readOnly: true, file: protocolOptions(loc, true, forceShare), backingChain: chain });
  const uuid = parent.info().uuid;
  if (typeof uuid === 'string' && uuid !== uuidHex(h.parentUuid)) {
    throw new BlockError('ECORRUPT', `vpc: parent '${loc.name}' has UUID ${uuid}, the differencing image expects ${uuidHex(h.parentUuid)} (field at offset 40 of the dynamic header)`, {
      field: 'parent_uuid',
      path: loc.name,
    });
  }
  return parent;
}
