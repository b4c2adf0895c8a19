/**
 * QMP's dirty bitmap commands (QEMU block/monitor/bitmap-qmp-cmds.c): block-dirty-bitmap-add,
 * -remove, -clear, -enable, -disable and -merge, with QEMU 7.2's arguments, checks in QEMU's
 * order and its error texts. Each command is parsed first, then prepared: done, but with what
 * undoes it kept, so that `transaction` can roll it back (QEMU's blockdev.c actions); a plain
 * command prepares and commits at once.
 */
import { isBlockError } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import { type DirtyBitmap, MAX_BITMAP_NAME_BYTES } from '../node/dirty-bitmap.js';
import type { BlockNode } from '../node/node.js';
import { type Args, dict, generic, list, only, optBool, optUint32, str } from './qapi-args.js';

/** A command's effect, done but not final: `commit` keeps it, `abort` undoes it. */
export interface PreparedAction {
  commit(): void;
  /** May return a promise: a job's abort waits until the job has concluded (QEMU job_cancel_sync). */
  abort(): void | Promise<void>;
}

/** QAPI BlockDirtyBitmapAdd. */
export interface BitmapAddArgs {
  node: string;
  name: string;
  granularity?: number;
  persistent?: boolean;
  disabled?: boolean;
}

/** QAPI BlockDirtyBitmap: a bitmap by node (node-name or drive id) and name. */
export interface BitmapRef {
  node: string;
  name: string;
}

/** QAPI BlockDirtyBitmapMerge: sources are names on `node` or bitmaps of any node. */
export interface BitmapMergeArgs {
  node: string;
  target: string;
  bitmaps: (string | BitmapRef)[];
}

/** QEMU's extra advice on an inconsistent bitmap goes to humans only, never into a QMP error. */
const HUMAN_HINT = / \(remove it with block-dirty-bitmap-remove\)$/;

/** Reads block-dirty-bitmap-add's arguments (members in QAPI's order, unexpected ones last). */
export function parseBitmapAdd(args: Args, path = ''): BitmapAddArgs {
  const out: BitmapAddArgs = { node: str(args, 'node', true, path), name: str(args, 'name', true, path) };
  const granularity = optUint32(args, 'granularity');
  const persistent = optBool(args, 'persistent', path);
  const disabled = optBool(args, 'disabled', path);
  only(args, ['node', 'name', 'granularity', 'persistent', 'disabled'], path);
  if (granularity !== undefined) out.granularity = granularity;
  if (persistent !== undefined) out.persistent = persistent;
  if (disabled !== undefined) out.disabled = disabled;
  return out;
}

/** Reads `{node, name}` (the arguments of -remove, -clear, -enable, -disable). */
export function parseBitmapRef(args: Args, path = ''): BitmapRef {
  const out = { node: str(args, 'node', true, path), name: str(args, 'name', true, path) };
  only(args, ['node', 'name'], path);
  return out;
}

/** Reads block-dirty-bitmap-merge's arguments. */
export function parseBitmapMerge(args: Args, path = ''): BitmapMergeArgs {
  const node = str(args, 'node', true, path);
  const target = str(args, 'target', true, path);
  const bitmaps = list(args, 'bitmaps', path).map((item, i) => {
    if (typeof item === 'string') return item;
    // QEMU's visitor names no member for an alternate of the wrong type.
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw generic(`Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr`);
    return parseBitmapRef(dict(item, `${path}bitmaps[${i}]`), `${path}bitmaps[${i}].`);
  });
  only(args, ['node', 'target', 'bitmaps'], path);
  return { node, target, bitmaps };
}

/** A node's reachable nodes: every open drive's graph, roots first (as query-named-block-nodes walks it). */
function* nodesOf(layer: BlockLayer): Generator<BlockNode> {
  const seen = new Set<BlockNode>();
  const stack: BlockNode[] = [];
  for (const d of layer.listDrives()) {
    if (d.closed) continue;
    stack.push(d.node);
    while (stack.length > 0) {
      const n = stack.pop()!;
      if (seen.has(n)) continue;
      seen.add(n);
      yield n;
      stack.push(...[...n.children.values()].reverse());
    }
  }
  // Nodes added on their own (blockdev-add) come after the drives' graphs.
  for (const n of layer.listNodes()) if (!seen.has(n)) yield n;
}

/**
 * The node a QMP `node` argument means (QEMU bdrv_lookup_bs(node, node)): a drive id first (its
 * bitmap node: the root, or the first node below its filters, where the Drive API keeps bitmaps
 * too), else a node name.
 */
export function findBitmapNode(layer: BlockLayer, node: string): BlockNode | undefined {
  const drive = layer.drive(node);
  if (drive !== undefined && !drive.closed) return drive.bitmapNode;
  for (const n of nodesOf(layer)) if (n.name === node) return n;
  // Nodes added with blockdev-add and the graphs of exports' own drives.
  return layer.findNode(node);
}

/** A bitmap by node and name (QEMU block_dirty_bitmap_lookup). */
function lookup(layer: BlockLayer, ref: BitmapRef): { node: BlockNode; bitmap: DirtyBitmap } {
  const node = findBitmapNode(layer, ref.node);
  if (node === undefined) throw generic(`Node '${ref.node}' not found`);
  const bitmap = node.bitmaps.find(ref.name);
  if (bitmap === undefined) throw generic(`Dirty bitmap '${ref.name}' not found`);
  return { node, bitmap };
}

/** Runs a core check or change, its BlockError as QMP's GenericError with QEMU's text. */
function qemuWording<T>(run: () => T): T {
  try {
    return run();
  } catch (e) {
    // The BlockError stays as the cause: its code, for callers that are no QMP client (blocklayer bitmap).
    if (isBlockError(e)) throw Object.assign(generic(e.message.replace(HUMAN_HINT, '')), { cause: e });
    throw e;
  }
}

const NOTHING_TO_UNDO: PreparedAction = { commit() {}, abort() {} };

/** block-dirty-bitmap-add; undone by forgetting the new bitmap. */
export function prepareBitmapAdd(layer: BlockLayer, args: BitmapAddArgs): PreparedAction {
  if (args.name === '') throw generic('Bitmap name cannot be empty');
  const node = findBitmapNode(layer, args.node);
  if (node === undefined) throw generic(`Cannot find device='${args.node}' nor node-name='${args.node}'`);
  const g = args.granularity;
  if (g !== undefined && (g < 512 || (g & (g - 1)) !== 0)) throw generic('Granularity must be power of 2 and at least 512');
  if (node.bitmaps.find(args.name) === undefined && new TextEncoder().encode(args.name).length > MAX_BITMAP_NAME_BYTES) {
    throw generic(`Bitmap name too long: ${args.name}`);
  }
  const bitmap = qemuWording(() =>
    node.bitmaps.add(args.name, {
      ...(g === undefined ? {} : { granularity: g }),
      persistent: args.persistent === true,
      disabled: args.disabled === true,
    }),
  );
  return { commit() {}, abort: () => node.bitmaps.drop(bitmap) };
}

/** block-dirty-bitmap-clear; undone by putting the old bits back. */
export function prepareBitmapClear(layer: BlockLayer, ref: BitmapRef): PreparedAction {
  const { bitmap } = lookup(layer, ref);
  qemuWording(() => bitmap.check('modify'));
  const backup = bitmap.granules.clone();
  bitmap.clear();
  return { commit() {}, abort: () => bitmap.granules.replaceWith(backup) };
}

/** block-dirty-bitmap-enable (`on`) or -disable; undone by the old recording state. */
export function prepareBitmapRecording(layer: BlockLayer, ref: BitmapRef, on: boolean): PreparedAction {
  const { bitmap } = lookup(layer, ref);
  qemuWording(() => bitmap.check('record'));
  const was = bitmap.recording;
  bitmap.setRecording(on);
  return was === on ? NOTHING_TO_UNDO : { commit() {}, abort: () => bitmap.setRecording(was) };
}

/**
 * block-dirty-bitmap-merge: every source found and checked in order, then the target checked
 * (QEMU merges into a scratch bitmap first, so the target's own refusal comes last); undone by
 * putting the target's old bits back.
 */
export function prepareBitmapMerge(layer: BlockLayer, args: BitmapMergeArgs): PreparedAction {
  const { node, bitmap: target } = lookup(layer, { node: args.node, name: args.target });
  const sources: DirtyBitmap[] = [];
  for (const item of args.bitmaps) {
    let source: DirtyBitmap | undefined;
    if (typeof item === 'string') {
      source = node.bitmaps.find(item);
      if (source === undefined) throw generic(`Dirty bitmap '${item}' not found`);
    } else {
      source = lookup(layer, item).bitmap;
    }
    qemuWording(() => source.check('read'));
    if (source.size !== target.size) {
      throw generic(`Bitmaps are of different sizes (destination size is ${target.size}, source size is ${source.size}) and can't be merged`);
    }
    sources.push(source);
  }
  qemuWording(() => target.check('modify'));
  const backup = target.granules.clone();
  qemuWording(() => node.bitmaps.merge(target.name, sources));
  return { commit() {}, abort: () => target.granules.replaceWith(backup) };
}

/**
 * block-dirty-bitmap-remove: the stored copy goes from the image now (as QEMU's prepare does);
 * the bitmap stays, busy, until commit drops it; abort keeps it (stored again at close).
 */
export async function prepareBitmapRemove(layer: BlockLayer, ref: BitmapRef): Promise<PreparedAction> {
  const { node, bitmap } = lookup(layer, ref);
  qemuWording(() => bitmap.check('remove'));
  try {
    await node.bitmaps.unstore(bitmap);
  } catch (e) {
    throw isBlockError(e) ? Object.assign(generic(e.message), { cause: e }) : e;
  }
  bitmap.acquire();
  return {
    commit() {
      bitmap.release();
      node.bitmaps.drop(bitmap);
    },
    abort: () => bitmap.release(),
  };
}

/** Runs a prepared command to its end (a command outside a transaction). */
export async function commitNow(prepared: PreparedAction | Promise<PreparedAction>): Promise<Record<string, never>> {
  (await prepared).commit();
  return {};
}

/** QAPI BlockDirtyInfo of a node's bitmaps, newest first as QEMU lists them, or undefined when it has none. */
export function qapiDirtyBitmaps(node: BlockNode): Record<string, unknown>[] | undefined {
  if (!node.bitmaps.active) return undefined;
  return node.bitmaps
    .info()
    .reverse()
    .map((b) => {
      const out: Record<string, unknown> = { name: b.name, count: b.count, granularity: b.granularity, recording: b.recording, busy: b.busy, persistent: b.persistent };
      if (b.inconsistent) out.inconsistent = true;
      return out;
    });
}
