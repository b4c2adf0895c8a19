// What stream and commit share: walking a backing chain, finding an image in it by file name,
// asking where a range is allocated, copying a range, and the op blocker that keeps two jobs
// off the same nodes. QEMU's wording in every error.
import { BlockError } from '../errors.js';
import type { BlockNode } from '../node/node.js';
import { dirName, isAbsolutePath, joinPath } from '../platform/files.js';
import type { JobHost } from './host.js';
import { isMirrorNode } from './mirror.js';
import { reopenQuiet } from './reopen-quiet.js';
import { holdForJob } from './root-node.js';

/** Bytes one step of stream or commit moves (QEMU STREAM_CHUNK, COMMIT_BUFFER_SIZE: 512 KiB). */
export const CHAIN_CHUNK = 512 * 1024;

/** The node's backing node, if any. */
export function backingOf(node: BlockNode): BlockNode | undefined {
  return node.child('backing');
}

/** Hops from `top` down its backing chain to `node` (0: `top` itself), or -1 when it is not in the chain (QEMU bdrv_chain_contains). */
export function chainDepth(top: BlockNode, node: BlockNode): number {
  let depth = 0;
  for (let n: BlockNode | undefined = top; n !== undefined; n = backingOf(n), depth++) if (n === node) return depth;
  return -1;
}

/** The image right above `node` in `top`'s chain (QEMU bdrv_find_overlay). */
export function overlayOf(top: BlockNode, node: BlockNode): BlockNode | undefined {
  for (let n: BlockNode | undefined = top; n !== undefined; n = backingOf(n)) if (backingOf(n) === node) return n;
  return undefined;
}

/** The bottom of `top`'s chain, if `top` has a backing node (QEMU bdrv_find_base). */
export function bottomOf(top: BlockNode): BlockNode | undefined {
  let n = backingOf(top);
  while (n !== undefined && backingOf(n) !== undefined) n = backingOf(n);
  return n;
}

/** bs->filename: the first file name or URL down the `file` children (what QEMU writes as a backing file name). */
export function imageFilename(node: BlockNode): string {
  let last = node;
  for (let n: BlockNode | undefined = node; n !== undefined; n = n.child('file')) {
    const f = n.options.filename ?? n.options.url;
    if (typeof f === 'string') return f;
    last = n;
  }
  // As QEMU names a node without a file name (null-co://).
  return `${last.driver.name}://`;
}

/**
 * The image of `top`'s chain (below `top`) whose file is `name` (QEMU bdrv_find_backing_image):
 * the name as opened, or a relative name resolved against the directory of the image above it.
 */
export function findBackingImage(top: BlockNode, name: string): BlockNode | undefined {
  let above = top;
  for (let n = backingOf(top); n !== undefined; above = n, n = backingOf(n)) {
    const file = imageFilename(n);
    if (file === name) return n;
    if (!isAbsolutePath(name) && isAbsolutePath(imageFilename(above)) && joinPath(dirName(imageFilename(above)), name) === joinPath(file, '.')) return n;
  }
  return undefined;
}

/**
 * Whether `[offset, offset+n)` from `offset` is allocated in `top` or an image below it down to,
 * not including, the image `limit` hops below (Infinity: the whole chain), skipping the first
 * `skip` images (1: `top` itself does not count); `length` is how far that answer holds.
 */
export async function allocatedBetween(top: BlockNode, offset: number, length: number, skip: number, limit: number): Promise<{ copy: boolean; length: number }> {
  const s = await top.blockStatus(offset, length);
  return { copy: s.allocated && s.depth >= skip && s.depth < limit, length: s.length };
}

/** Zeros to compare pieces against, a chunk at a time (made on first use). */
let zeroChunk: Buffer | null = null;

/** True when every byte of `data` is 0 (the copy then writes zeroes, which allocate nothing in a qcow2): memcmp against zeros, a chunk at a time. */
export function isZero(data: Uint8Array): boolean {
  zeroChunk ??= Buffer.alloc(CHAIN_CHUNK);
  const view = Buffer.from(data.buffer, data.byteOffset, data.length);
  for (let at = 0; at < view.length; at += CHAIN_CHUNK) {
    const end = Math.min(view.length, at + CHAIN_CHUNK);
    if (view.compare(zeroChunk, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}

/** Writes `data` at `offset` of `target`, as zeroes when it is all zeros. */
export function writeCopied(target: BlockNode, offset: number, data: Uint8Array): Promise<void> {
  return isZero(data) ? target.writeZeroes(offset, data.length) : target.write(offset, data);
}

/** Nodes a stream or commit job works on, by node: the job's type (QEMU's op blockers). */
const busyNodes = new WeakMap<BlockNode, string>();

/** Marks `nodes` as used by a job of `type`, or refuses with QEMU's "is busy" error if one already is. Returns the release. */
export function claimNodes(nodes: readonly BlockNode[], type: string): () => void {
  for (const n of nodes) {
    const user = busyNodes.get(n) ?? (isMirrorNode(n) ? 'mirror' : undefined);
    if (user !== undefined) throw new BlockError('EBUSY', `Node '${n.name}' is busy: block device is in use by block job: ${user}`, { node: n.name });
  }
  for (const n of nodes) busyNodes.set(n, type);
  const unhold = holdForJob(nodes);
  return () => {
    unhold();
    for (const n of nodes) if (busyNodes.get(n) === type) busyNodes.delete(n);
  };
}

/** The images from `top` down to, not including, `stop` (undefined: the whole chain). */
export function chainBetween(top: BlockNode, stop: BlockNode | undefined): BlockNode[] {
  const out: BlockNode[] = [];
  for (let n: BlockNode | undefined = top; n !== undefined && n !== stop; n = backingOf(n)) out.push(n);
  return out;
}

/** QEMU bdrv_lookup_bs(NULL, name): the node with that node name, or its error. */
export function nodeNamed(host: JobHost, name: string, field: string): BlockNode {
  const node = host.findNode(name);
  if (node === undefined) throw new BlockError('ENOENT', `Cannot find device='' nor node-name='${name}'`, { field });
  return node;
}

/** Refuses a negative or non-integer speed (QEMU block_job_set_speed). */
export function checkSpeed(speed: number | undefined): void {
  if (speed !== undefined && (!Number.isSafeInteger(speed) || speed < 0)) throw new BlockError('EINVAL', "Parameter 'speed' expects a non-negative value", { field: 'speed' });
}

/**
 * Makes `node`'s backing node `next` (null: none), header first (the name and format written,
 * after a flush of what the new backing file relies on), then the open child; the old backing
 * node is released once the requests of the node's drives that may still read it are done. A
 * read-only `node` is made read-write for the header and read-only again (QEMU
 * bdrv_child_cb_update_filename), with the drives on `users` (the chain above it) drained.
 */
export async function relink(host: JobHost, node: BlockNode, next: BlockNode | null, name: string | null, format: string | undefined, users: readonly BlockNode[] = []): Promise<void> {
  await node.flush();
  if (node.readOnly) {
    await reopenQuiet(host, users, node, false);
    try {
      await node.changeBackingFile(name, format);
    } finally {
      await reopenQuiet(host, users, node, true).catch(() => undefined);
    }
  } else await node.changeBackingFile(name, format);
  const old = node.swapBacking(next);
  for (const d of host.drivesOn(node)) await d.drain();
  await old?.unref();
}
