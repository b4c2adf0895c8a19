/**
 * QAPI BlkdebugInjectErrorOptions (blkdebug's `inject-error` in blockdev-add) → our blkdebug
 * rules. QEMU activates a rule when its event fires; we raise none of qcow2's internal events,
 * so only `none` (fired once, as the node is created: the rule is active from the start) is
 * taken, and the others are refused by name rather than silently never firing.
 */
import { generic } from './qapi-args.js';

/** BlkdebugEvent's values (QEMU 7.2). */
const EVENTS = [
  'l1_update', 'l1_grow_alloc_table', 'l1_grow_write_table', 'l1_grow_activate_table', 'l2_load', 'l2_update', 'l2_update_compressed',
  'l2_alloc_cow_read', 'l2_alloc_write', 'read_aio', 'read_backing_aio', 'read_compressed', 'write_aio', 'write_compressed', 'vmstate_load',
  'vmstate_save', 'cow_read', 'cow_write', 'reftable_load', 'reftable_grow', 'reftable_update', 'refblock_load', 'refblock_update',
  'refblock_update_part', 'refblock_alloc', 'refblock_alloc_hookup', 'refblock_alloc_write', 'refblock_alloc_write_blocks',
  'refblock_alloc_write_table', 'refblock_alloc_switch_table', 'cluster_alloc', 'cluster_alloc_bytes', 'cluster_free', 'flush_to_os',
  'flush_to_disk', 'pwritev_rmw_head', 'pwritev_rmw_after_head', 'pwritev_rmw_tail', 'pwritev_rmw_after_tail', 'pwritev', 'pwritev_zero',
  'pwritev_done', 'empty_image_prepare', 'l1_shrink_write_table', 'l1_shrink_free_l2_clusters', 'cor_write', 'cluster_alloc_space', 'none',
];
/** BlkdebugIOType's values; without `iotype` a rule covers all but block-status. */
const IO_TYPES = ['read', 'write', 'write-zeroes', 'discard', 'flush', 'block-status'];
const DEFAULT_IO_TYPES = ['read', 'write', 'write-zeroes', 'discard', 'flush'];
/** Linux errno numbers our requests can fail with. */
const ERRNO: Readonly<Record<number, string>> = { 5: 'EIO', 13: 'EACCES', 28: 'ENOSPC', 30: 'EROFS', 95: 'ENOTSUP' };
const MEMBERS: Readonly<Record<string, 'str' | 'int' | 'bool'>> = { event: 'str', state: 'int', iotype: 'str', errno: 'int', sector: 'int', once: 'bool', immediately: 'bool' };

/** One of our blkdebug rules (src/drivers/blkdebug.ts). */
export interface BlkdebugRule {
  event: string | string[];
  code: string;
  offset?: number;
  once: boolean;
}

/** A list from JSON, or from keyval (`inject-error.0.event=none`: an object keyed 0, 1, …). */
function list(value: unknown, path: string): unknown[] {
  if (Array.isArray(value)) return value;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value);
    if (entries.every(([k], i) => k === String(i))) return entries.map(([, v]) => v);
  }
  throw generic(`Invalid parameter type for '${path}', expected: array`);
}

/** A member's value from JSON or keyval (strings there), checked against its type. */
function scalar(value: unknown, type: 'str' | 'int' | 'bool', path: string): unknown {
  let v = value;
  if (typeof v === 'string' && type === 'int' && /^-?\d+$/.test(v)) v = Number(v);
  if (typeof v === 'string' && type === 'bool' && (v === 'on' || v === 'off')) v = v === 'on';
  const ok = type === 'str' ? typeof v === 'string' : type === 'int' ? Number.isInteger(v) : typeof v === 'boolean';
  if (!ok) throw generic(`Invalid parameter type for '${path}', expected: ${type === 'str' ? 'string' : type === 'int' ? 'integer' : 'boolean'}`);
  return v;
}

/** Translates `inject-error` at `path`; throws GenericError with QEMU's visitor texts, or ours where a value cannot be honoured. */
export function blkdebugRules(value: unknown, path: string): BlkdebugRule[] {
  return list(value, path).map((item, i) => {
    const at = `${path}[${i}]`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw generic(`Invalid parameter type for '${at}', expected: object`);
    const o = item as Record<string, unknown>;
    const get = (key: string) => (o[key] === undefined ? undefined : scalar(o[key], MEMBERS[key]!, `${at}.${key}`));
    const event = get('event') as string | undefined;
    if (event === undefined) throw generic(`Parameter '${at}.event' is missing`);
    if (!EVENTS.includes(event)) throw generic(`Parameter 'event' does not accept value '${event}'`);
    const state = get('state');
    const iotype = get('iotype') as string | undefined;
    if (iotype !== undefined && !IO_TYPES.includes(iotype)) throw generic(`Parameter 'iotype' does not accept value '${iotype}'`);
    const errno = (get('errno') as number | undefined) ?? 5;
    const sector = get('sector') as number | undefined;
    const once = (get('once') as boolean | undefined) ?? false;
    get('immediately'); // an error reported at once or from a bottom half: the same rejected request here
    for (const key of Object.keys(o)) if (!(key in MEMBERS)) throw generic(`Parameter '${at}.${key}' is unexpected`);
    if (event !== 'none') throw generic(`Parameter '${at}.event': only 'none' (active from the node's creation) is supported by this server`);
    if (state !== undefined) throw generic(`Parameter '${at}.state' is not supported by this server`);
    if (iotype === 'block-status') throw generic(`Parameter '${at}.iotype': 'block-status' is not supported by this server`);
    const code = ERRNO[errno];
    if (code === undefined) throw generic(`Parameter '${at}.errno': only ${Object.entries(ERRNO).map(([n, c]) => `${n} (${c})`).join(', ')} are supported by this server`);
    const rule: BlkdebugRule = { event: iotype ?? DEFAULT_IO_TYPES, code, once };
    if (sector !== undefined && sector >= 0) rule.offset = sector * 512;
    return rule;
  });
}
