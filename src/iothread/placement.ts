// Which thread each part of a qemu-storage-daemon command line lives in: an export with
// `iothread=ID` takes its node and every node below it (and their throttle groups) into that
// iothread; the rest stays on the main thread. A node or a throttle group cannot live in two
// threads: that is refused, naming it and the threads (groups across threads need shared state,
// not built yet).
import { BlockError } from '../errors.js';
import { splitQemuOpts } from '../options/drive-string.js';
import { parseThrottleGroupObject } from '../options/qom.js';
import type { IothreadExportSpec } from './messages.js';

/** BlockdevOptions members that name another node (a child given by its node-name). */
const CHILD_KEYS = ['file', 'backing', 'data-file', 'image', 'test', 'raw'];
/** iothread object properties QEMU has that change nothing here (its polling and batching). */
const IOTHREAD_PROPS = ['poll-max-ns', 'poll-grow', 'poll-shrink', 'aio-max-batch', 'thread-pool-min', 'thread-pool-max'];
const MAIN = 'the main thread';

/** The command line's parts, as parseQsdOptions reads them. */
export interface PlacedPlan {
  blockdevs: { args: Record<string, unknown>; keyval: boolean }[];
  exports: Record<string, unknown>[];
  objects: string[];
}

/** What goes to each iothread, and what stays. */
export interface Placement {
  /** iothread ids in the order declared. */
  iothreads: string[];
  /** Each iothread's exports, each with its graph. */
  specs: Map<string, IothreadExportSpec[]>;
  /** What the main thread opens. */
  main: PlacedPlan;
}

/** `iothread,id=…[,poll-max-ns=…]`: the id, or undefined for another object type. */
function iothreadObject(text: string): string | undefined {
  const pairs = splitQemuOpts(text);
  // A bare first word is the type (splitQemuOpts reads it as `word=on`).
  const typed = pairs.find(([k]) => k === 'qom-type')?.[1] ?? (pairs[0]?.[1] === 'on' && !text.startsWith(`${pairs[0][0]}=`) ? pairs[0][0] : undefined);
  if (typed !== 'iothread') return undefined;
  let id: string | undefined;
  for (const [k, v] of pairs.slice(pairs[0]?.[0] === typed ? 1 : 0)) {
    if (k === 'id') id = v;
    else if (k !== 'qom-type' && !IOTHREAD_PROPS.includes(k)) throw new BlockError('EINVAL', `--object '${text}': Parameter '${k}' is unexpected`, { field: k });
  }
  if (id === undefined || id === '') throw new BlockError('EINVAL', `--object '${text}': Parameter 'id' is missing`, { field: 'id' });
  return id;
}

function childNames(args: Record<string, unknown>): string[] {
  return CHILD_KEYS.map((k) => args[k]).filter((v): v is string => typeof v === 'string');
}

/** Splits the plan between the iothreads its exports name and the main thread. */
export function placeOnIothreads(plan: PlacedPlan): Placement {
  const iothreads: string[] = [];
  const objects: string[] = [];
  for (const text of plan.objects) {
    const id = iothreadObject(text);
    if (id === undefined) objects.push(text);
    else if (iothreads.includes(id)) throw new BlockError('EEXIST', `--object '${text}': attempt to add duplicate property '${id}' to object (type 'container')`, { field: 'id' });
    else iothreads.push(id);
  }
  const byName = new Map<string, number>();
  plan.blockdevs.forEach((b, i) => {
    if (typeof b.args['node-name'] === 'string') byName.set(b.args['node-name'], i);
  });
  /** Blockdev index → the thread it lives in. */
  const owner = new Map<number, string>();
  const claim = (i: number, thread: string) => {
    const had = owner.get(i);
    const name = String(plan.blockdevs[i]?.args['node-name']);
    if (had !== undefined && had !== thread) throw new BlockError('EINVAL', `node '${name}' is used from ${had} and from ${thread}: a node lives in one thread`, { field: 'iothread' });
    if (had !== undefined) return;
    owner.set(i, thread);
    for (const child of childNames(plan.blockdevs[i]!.args)) {
      const j = byName.get(child);
      if (j !== undefined) claim(j, thread);
    }
  };
  const specs = new Map<string, IothreadExportSpec[]>(iothreads.map((t) => [t, []]));
  const mainExports: Record<string, unknown>[] = [];
  const threaded: [Record<string, unknown>, string][] = [];
  for (const x of plan.exports) {
    const t = x.iothread;
    if (t === undefined) {
      mainExports.push(x);
      continue;
    }
    if (typeof t !== 'string' || !iothreads.includes(t)) throw new BlockError('EINVAL', `iothread "${String(t)}" not found`, { field: 'iothread' });
    if (x.bitmaps !== undefined) throw new BlockError('ENOTSUP', `export '${String(x.id)}': bitmaps on an export in an iothread are not supported yet`, { field: 'bitmaps' });
    const j = byName.get(String(x['node-name']));
    if (j === undefined) throw new BlockError('EINVAL', `export '${String(x.id)}': node '${String(x['node-name'])}' is not a --blockdev of this command line (an export in an iothread opens its graph there)`, { field: 'node-name' });
    claim(j, `iothread ${t}`);
    threaded.push([x, t]);
  }
  // What the main thread opens or exports stays there: a node also wanted by an iothread is refused.
  for (const x of mainExports) {
    const j = byName.get(String(x['node-name']));
    if (j !== undefined) claim(j, MAIN);
  }
  plan.blockdevs.forEach((_, i) => {
    if (!owner.has(i) && !threaded.some(([x]) => x['node-name'] === plan.blockdevs[i]?.args['node-name'])) claim(i, MAIN);
  });
  // Throttle groups: each used from one thread only.
  const groupThreads = new Map<string, Set<string>>();
  for (const [i, thread] of owner) {
    const g = plan.blockdevs[i]!.args['throttle-group'];
    if (typeof g !== 'string') continue;
    const set = groupThreads.get(g) ?? new Set<string>();
    set.add(thread);
    groupThreads.set(g, set);
  }
  for (const [g, threads] of groupThreads) {
    if (threads.size > 1) {
      throw new BlockError('ENOTSUP', `throttle group '${g}' has members in ${[...threads].join(' and ')}: a group spanning threads is not supported yet (its members must share one thread)`, { field: 'throttle-group' });
    }
  }
  const groupText = new Map(objects.map((text) => [parseThrottleGroupObject(text).id, text]));
  const movedGroups = new Set<string>();
  for (const [x, t] of threaded) {
    const thread = `iothread ${t}`;
    const mine = plan.blockdevs.filter((_, i) => owner.get(i) === thread && !claimedBefore(specs.get(t)!, plan.blockdevs[i]!));
    const groups = [...groupThreads].filter(([g, s]) => s.has(thread) && !movedGroups.has(g) && groupText.has(g)).map(([g]) => g);
    for (const g of groups) movedGroups.add(g);
    specs.get(t)!.push({
      groups: groups.map((g) => groupText.get(g)!),
      blockdevs: mine,
      id: String(x.id),
      name: String(x.name ?? x['node-name']),
      nodeName: String(x['node-name']),
      writable: x.writable === true,
      ...(typeof x.description === 'string' ? { description: x.description } : {}),
      ...(x['allocation-depth'] === true ? { allocationDepth: true } : {}),
    });
  }
  return {
    iothreads,
    specs,
    main: {
      blockdevs: plan.blockdevs.filter((_, i) => owner.get(i) === MAIN),
      exports: mainExports,
      objects: objects.filter((text) => !movedGroups.has(parseThrottleGroupObject(text).id)),
    },
  };
}

/** A node already opened in this iothread for an earlier export of it. */
function claimedBefore(earlier: IothreadExportSpec[], b: IothreadExportSpec['blockdevs'][number]): boolean {
  return earlier.some((s) => s.blockdevs.includes(b));
}
