import { BlockError } from '../../errors.js';
import type { NodeOptions } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { dirName, HAS_LOCAL_FILES, isAbsolutePath, joinPath, realPath } from '../../platform/files.js';
import * as L from './limits.js';

/**
 * Where an image's bytes come from: a local file, a URL (the http driver) or an OPFS path (the
 * browser build's opfs driver). Backing and data file names in a header are relative to it, as
 * QEMU resolves them against the image's filename.
 */
export type Location = { kind: 'file'; name: string } | { kind: 'url'; name: string } | { kind: 'opfs'; name: string };

/** A name stored as `opfs:vms/base.qcow2`: a path in the Origin Private File System (the browser build's opfs driver). */
const OPFS_SCHEME = 'opfs:';

const URL_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/** The location of the protocol node under `node` (through `file` children), if it has one. */
export function locationOf(node: BlockNode): Location | undefined {
  const o = node.options;
  if (node.driver.name === 'file' && typeof o.filename === 'string') return { kind: 'file', name: o.filename };
  if (node.driver.name === 'http' && typeof o.url === 'string') return { kind: 'url', name: o.url };
  if (node.driver.name === 'opfs' && typeof o.path === 'string') return { kind: 'opfs', name: o.path.replace(/^\/+/, '') };
  const child = node.child('file');
  return child ? locationOf(child) : undefined;
}

/** A name from the header, resolved against the image's location. */
export function resolveName(image: Location | undefined, name: string, what: string, nodeName: string): Location {
  if (URL_SCHEME.test(name)) return { kind: 'url', name };
  if (image?.kind === 'url') return { kind: 'url', name: new URL(name, image.name).href };
  // only where there are no local files (the browser build) may a name mean an OPFS path
  if (!HAS_LOCAL_FILES && name.startsWith(OPFS_SCHEME)) return { kind: 'opfs', name: name.slice(OPFS_SCHEME.length).replace(/^\/+/, '') };
  // an image in OPFS: relative names from its folder, absolute ones from the OPFS root, as a file's
  if (image?.kind === 'opfs') return { kind: 'opfs', name: isAbsolutePath(name) ? name.replace(/^\/+/, '') : joinPath(dirName(`/${image.name}`), name).replace(/^\/+/, '') };
  if (isAbsolutePath(name)) return { kind: 'file', name };
  if (image === undefined) {
    throw new BlockError('ENOTSUP', `qcow2: cannot resolve the relative ${what} name '${name}': the image is neither a file nor a URL`, { node: nodeName });
  }
  return { kind: 'file', name: joinPath(dirName(image.name), name) };
}

/** Options of the protocol node that reads `loc`; `forceShare` (QEMU force-share) as the image's own file was opened. */
export function protocolOptions(loc: Location, readOnly: boolean, forceShare = false): NodeOptions {
  if (loc.kind === 'opfs') return { driver: 'opfs', path: loc.name, readOnly };
  if (loc.kind !== 'file') return { driver: 'http', url: loc.name };
  return { driver: 'file', filename: loc.name, readOnly, ...(forceShare ? { forceShare } : {}) };
}

/** One name per image for loop detection: the real path of a file, the URL itself. */
export async function identity(loc: Location, nodeName: string): Promise<string> {
  if (loc.kind === 'url') return loc.name;
  if (loc.kind === 'opfs') return OPFS_SCHEME + loc.name;
  return realPath(loc.name).catch((e) => {
    throw new BlockError('ENOENT', `qcow2: could not open backing file '${loc.name}': ${(e as Error).message}`, { path: loc.name, node: nodeName, cause: e });
  });
}

/**
 * Options of a backing node at `loc`: of the given format, or probed over its protocol node
 * (`driver: 'auto'`) when the header names none; a qcow2 one learns `chain` (the images above it, for loops).
 */
export function backingOptions(loc: Location, format: string | undefined, chain: string[], forceShare: boolean): NodeOptions {
  const file = protocolOptions(loc, true, forceShare);
  if (format === undefined) return { driver: 'auto', readOnly: true, file, formatOptions: { qcow2: { backingChain: chain } } };
  // qcow2 and vmdk follow their own backing files: they get the chain to refuse loops.
  return { driver: format, readOnly: true, file, ...(format === 'qcow2' || format === 'vmdk' ? { backingChain: chain } : {}) };
}

/** True when `head` starts with qcow2's magic. */
export function hasQcow2Magic(head: Uint8Array): boolean {
  return head.length >= 4 && ((head[0] << 24) | (head[1] << 16) | (head[2] << 8) | head[3]) >>> 0 === L.QCOW2_MAGIC;
}
