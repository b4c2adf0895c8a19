/**
 * qemu-storage-daemon's command line for `blocklayer serve`: `--blockdev` (JSON or dotted
 * key=value), `--object throttle-group,…`, `--nbd-server addr.type=inet|unix,…`, `--export
 * type=nbd,…`, `--chardev socket,id=…,path=…,server=on,wait=off` with `--monitor chardev=…`.
 * Each is read as QEMU's keyval syntax (`,,` a literal comma, dotted keys nest, numeric keys make
 * lists) and carried out through the same code as the QMP commands of the same names.
 */
import { BlockError } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import { splitQemuOpts } from '../options/drive-string.js';
import { parseThrottleGroupObject } from '../options/qom.js';
import { blockdevAdd } from '../qmp/blockdev-commands.js';
import type { NbdExportManager } from '../qmp/exports.js';

/** The qemu-storage-daemon options as `parseArgs` gives them (each repeatable). */
export interface QsdOptionValues {
  blockdev?: string[];
  export?: string[];
  'nbd-server'?: string[];
  object?: string[];
  chardev?: string[];
  monitor?: string[];
}

/** parseArgs' declarations of those options. */
export const QSD_OPTIONS = {
  blockdev: { type: 'string', multiple: true },
  export: { type: 'string', multiple: true },
  'nbd-server': { type: 'string', multiple: true },
  object: { type: 'string', multiple: true },
  chardev: { type: 'string', multiple: true },
  monitor: { type: 'string', multiple: true },
} as const;

/** What the options ask for. */
export interface QsdPlan {
  /** QAPI BlockdevOptions, and whether they came as key=value strings (every value a string). */
  blockdevs: { args: Record<string, unknown>; keyval: boolean }[];
  /** QAPI BlockExportOptions (key=value strings: booleans as on/off). */
  exports: Record<string, unknown>[];
  /** `-object` strings of throttle groups. */
  objects: string[];
  /** Where the NBD server listens, and its connection limit. */
  nbdServer?: { listen: { path: string } | { host: string; port: number }; maxConnections?: number };
  /** The QMP monitor's socket. */
  qmpPath?: string;
}

/** Dotted keys as nested objects; an object whose keys are 0, 1, … as a list (QEMU keyval). */
export function keyvalObject(text: string, option: string): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [key, value] of splitQemuOpts(text)) {
    const parts = key.split('.');
    let at = root;
    for (const part of parts.slice(0, -1)) {
      const next = at[part];
      if (typeof next === 'string') throw new BlockError('EINVAL', `${option}: Parameter '${key}' conflicts with '${part}'`, { field: key });
      if (next === undefined) at[part] = {};
      at = at[part] as Record<string, unknown>;
    }
    const last = parts[parts.length - 1]!;
    if (typeof at[last] === 'object') throw new BlockError('EINVAL', `${option}: Parameter '${key}' conflicts with '${key}.…'`, { field: key });
    at[last] = value;
  }
  return listsOf(root) as Record<string, unknown>;
}

function listsOf(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  const out = Object.fromEntries(keys.map((k) => [k, listsOf(o[k])]));
  if (keys.length > 0 && keys.every((k, i) => k === String(i))) return keys.map((k) => out[k]);
  return out;
}

/** `--chardev socket,id=…,path=…,server=on,wait=off`: the chardev's id and socket path. */
function chardev(text: string): { id: string; path: string } {
  const o = keyvalObject(text.startsWith('socket,') ? `backend=${text}` : text, '--chardev');
  if (o.backend !== 'socket') throw new BlockError('EINVAL', `--chardev '${text}': only a socket chardev is supported`, { field: 'chardev' });
  const { id, path, server, wait } = o as Record<string, string | undefined>;
  if (id === undefined || path === undefined) throw new BlockError('EINVAL', `--chardev '${text}': id= and path= are required`, { field: 'chardev' });
  if (server !== 'on' || (wait !== undefined && wait !== 'off')) throw new BlockError('EINVAL', `--chardev '${text}': the monitor socket must be server=on,wait=off`, { field: 'chardev' });
  return { id, path };
}

/** `--nbd-server addr.type=inet,addr.host=…,addr.port=…` or `addr.type=unix,addr.path=…`, with `max-connections`. */
function nbdServer(text: string): NonNullable<QsdPlan['nbdServer']> {
  const o = keyvalObject(text, '--nbd-server');
  const fail = (why: string) => new BlockError('EINVAL', `--nbd-server '${text}': ${why}`, { field: 'nbd-server' });
  for (const key of Object.keys(o)) if (key !== 'addr' && key !== 'max-connections') throw fail(`Parameter '${key}' is not supported here`);
  const addr = o.addr as Record<string, string> | undefined;
  if (addr === undefined) throw fail("Parameter 'addr' is missing");
  let listen: { path: string } | { host: string; port: number };
  if (addr.type === 'unix' && addr.path !== undefined) listen = { path: addr.path };
  else if (addr.type === 'inet' && addr.host !== undefined && addr.port !== undefined && /^\d{1,5}$/.test(addr.port) && Number(addr.port) <= 65535) {
    listen = { host: addr.host, port: Number(addr.port) };
  } else throw fail('addr must be addr.type=inet,addr.host=…,addr.port=N or addr.type=unix,addr.path=…');
  const max = o['max-connections'];
  if (max === undefined) return { listen };
  if (typeof max !== 'string' || !/^\d+$/.test(max) || Number(max) < 1) throw fail("'max-connections' must be a positive integer");
  return { listen, maxConnections: Number(max) };
}

/** Reads the qemu-storage-daemon options; nothing is opened yet. */
export function parseQsdOptions(v: QsdOptionValues): QsdPlan {
  const plan: QsdPlan = { blockdevs: [], exports: [], objects: v.object ?? [] };
  for (const text of v.blockdev ?? []) {
    if (text.trimStart().startsWith('{')) {
      let args: unknown;
      try {
        args = JSON.parse(text);
      } catch (e) {
        throw new BlockError('EINVAL', `--blockdev: not JSON: ${(e as Error).message}`, { field: 'blockdev' });
      }
      if (typeof args !== 'object' || args === null || Array.isArray(args)) throw new BlockError('EINVAL', '--blockdev: JSON must be an object', { field: 'blockdev' });
      plan.blockdevs.push({ args: args as Record<string, unknown>, keyval: false });
    } else plan.blockdevs.push({ args: keyvalObject(text, '--blockdev'), keyval: true });
  }
  for (const text of v.export ?? []) {
    const o = keyvalObject(text, '--export');
    for (const key of ['writable', 'writethrough', 'allocation-depth']) {
      if (o[key] === undefined) continue;
      if (o[key] !== 'on' && o[key] !== 'off') throw new BlockError('EINVAL', `--export '${text}': Parameter '${key}' expects 'on' or 'off'`, { field: key });
      o[key] = o[key] === 'on';
    }
    if (typeof o.bitmaps === 'string') o.bitmaps = [o.bitmaps];
    plan.exports.push(o);
  }
  const servers = v['nbd-server'] ?? [];
  if (servers.length > 1) throw new BlockError('EINVAL', '--nbd-server: given more than once', { field: 'nbd-server' });
  if (servers.length === 1) plan.nbdServer = nbdServer(servers[0]!);
  const chardevs = new Map((v.chardev ?? []).map((t) => chardev(t)).map((c) => [c.id, c.path]));
  for (const text of v.monitor ?? []) {
    const o = keyvalObject(text, '--monitor');
    if (o.mode !== undefined && o.mode !== 'control') throw new BlockError('EINVAL', `--monitor '${text}': only mode=control is supported`, { field: 'monitor' });
    const path = typeof o.chardev === 'string' ? chardevs.get(o.chardev) : undefined;
    if (path === undefined) throw new BlockError('EINVAL', `--monitor '${text}': chardev '${String(o.chardev)}' not found`, { field: 'monitor' });
    if (plan.qmpPath !== undefined) throw new BlockError('EINVAL', '--monitor: one QMP monitor is supported', { field: 'monitor' });
    plan.qmpPath = path;
  }
  return plan;
}

/** Whether any qemu-storage-daemon option was given. */
export function hasQsdOptions(v: QsdOptionValues): boolean {
  return Object.keys(QSD_OPTIONS).some((k) => (v[k as keyof QsdOptionValues]?.length ?? 0) > 0);
}

/** Creates the throttle groups, adds the nodes, adds the exports, in that order (as qemu-storage-daemon needs them). */
export async function applyQsdPlan(plan: QsdPlan, layer: BlockLayer, exports: NbdExportManager): Promise<void> {
  for (const text of plan.objects) {
    const group = parseThrottleGroupObject(text);
    layer.createThrottleGroup(group.id, group.limits);
  }
  const named = (option: string, text: unknown, e: unknown) => new BlockError('EINVAL', `${option} ${typeof text === 'string' ? `'${text}'` : JSON.stringify(text)}: ${(e as Error).message}`, { cause: e });
  for (const b of plan.blockdevs) {
    try {
      await blockdevAdd(layer, b.args, b.keyval);
    } catch (e) {
      throw named('--blockdev', b.args, e);
    }
  }
  for (const x of plan.exports) {
    try {
      await exports.add(x);
    } catch (e) {
      throw named('--export', x, e);
    }
  }
}
