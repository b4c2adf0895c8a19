/**
 * QAPI BlockdevOptions (QMP blockdev-add, qemu-storage-daemon --blockdev) → our node options.
 * QEMU's driver names and kebab-case members map to our drivers and camelCase options; a child
 * given by name (`"file": "f0"`) is the open node of that name (or the root of the drive of that
 * id), shared. Members are read in QAPI's order with QEMU's visitor errors: a wrong type names the
 * member by its path (`file.filename`), an unknown member is "Parameter 'x' is unexpected" once
 * the rest of its object was read.
 */
import type { BlockNode } from '../node/node.js';
import type { NodeOptions } from '../node/driver.js';
import { isWellFormedId } from '../ids.js';
import { type Args, dict, generic, int64Value } from './qapi-args.js';
import { blkdebugRules } from './blkdebug-rules.js';

/**
 * What a member takes: QAPI's scalar types, an enum's values, a child (BlockdevRef: options or
 * a node name; `ref-or-null` also null), a SocketAddress, an object of booleans (cache), or
 * blkdebug's list of error injections.
 */
type MemberType = 'str' | 'int' | 'bool' | 'ref' | 'ref-or-null' | 'socket' | 'cache' | 'inject-error' | 'list' | readonly string[];

/**
 * One member of a driver's options: `to` is our option's name; `effect: 'none'` is a member we
 * read and check but whose behaviour ours already is (e.g. qcow2's overlap checks: we check every
 * metadata write); `effect: 'refused'` is one we cannot honour, refused rather than ignored.
 */
interface Member {
  readonly type: MemberType;
  readonly to?: string;
  readonly effect?: 'none' | 'refused';
  /** Our option takes another spelling of the value (`native` → no engine asked). */
  readonly value?: (v: unknown) => unknown;
}

/** One QEMU driver: our driver's name and its members in QAPI order. */
interface DriverTable {
  readonly ours: string;
  readonly members: Readonly<Record<string, Member>>;
}

const none = (type: MemberType): Member => ({ type, effect: 'none' });
const refused = (type: MemberType): Member => ({ type, effect: 'refused' });
const to = (name: string, type: MemberType): Member => ({ type, to: name });

const FILE_MEMBERS: Record<string, Member> = {
  filename: to('filename', 'str'),
  'pr-manager': refused('str'),
  locking: to('locking', ['off', 'on', 'auto']),
  // Linux AIO is not offered: `native` leaves the default engine, as `aio=native` of a -drive string.
  aio: { type: ['threads', 'native', 'io_uring'], to: 'aio', value: (v) => (v === 'native' ? undefined : v) },
  'aio-max-batch': none('int'),
  'drop-cache': none('bool'),
  'x-check-cache-dropped': none('bool'),
};
const NULL_MEMBERS: Record<string, Member> = { size: to('size', 'int'), 'latency-ns': to('latencyNs', 'int'), 'read-zeroes': to('readZeroes', 'bool') };
const GENERIC_FORMAT: Record<string, Member> = { file: to('file', 'ref') };
const HTTP_MEMBERS: Record<string, Member> = {
  url: to('url', 'str'),
  readahead: refused('int'),
  timeout: to('timeout', 'int'),
  username: refused('str'),
  'password-secret': refused('str'),
  'proxy-username': refused('str'),
  'proxy-password-secret': refused('str'),
  cookie: refused('str'),
};

/** QEMU's drivers this server opens (QAPI BlockdevDriver values), with our names. */
const DRIVERS: Readonly<Record<string, DriverTable>> = {
  file: { ours: 'file', members: FILE_MEMBERS },
  host_device: { ours: 'file', members: FILE_MEMBERS },
  'null-co': { ours: 'null', members: NULL_MEMBERS },
  'null-aio': { ours: 'null', members: NULL_MEMBERS },
  raw: { ours: 'raw', members: { file: to('file', 'ref'), offset: to('offset', 'int'), size: to('size', 'int') } },
  qcow2: {
    ours: 'qcow2',
    members: {
      file: to('file', 'ref'),
      backing: to('backing', 'ref-or-null'),
      // Refcounts are always written in order here: lazy refcounts asked for are not needed.
      'lazy-refcounts': none('bool'),
      'pass-discard-request': none('bool'),
      'pass-discard-snapshot': none('bool'),
      'pass-discard-other': none('bool'),
      'overlap-check': none('str'),
      'cache-size': none('int'),
      'l2-cache-size': to('l2CacheSize', 'int'),
      'l2-cache-entry-size': none('int'),
      'refcount-cache-size': to('refcountCacheSize', 'int'),
      'cache-clean-interval': none('int'),
      encrypt: refused('str'),
      'data-file': to('data-file', 'ref'),
    },
  },
  vmdk: { ours: 'vmdk', members: { file: to('file', 'ref'), backing: to('backing', 'ref-or-null') } },
  vpc: { ours: 'vpc', members: GENERIC_FORMAT },
  vhdx: { ours: 'vhdx', members: GENERIC_FORMAT },
  vdi: { ours: 'vdi', members: GENERIC_FORMAT },
  nbd: {
    ours: 'nbd',
    members: {
      server: to('server', 'socket'),
      export: to('export', 'str'),
      'tls-creds': refused('str'),
      'tls-hostname': to('tlsHostname', 'str'),
      'x-dirty-bitmap': to('xDirtyBitmap', 'str'),
      'reconnect-delay': to('reconnectDelay', 'int'),
      'open-timeout': to('openTimeout', 'int'),
    },
  },
  http: { ours: 'http', members: HTTP_MEMBERS },
  https: { ours: 'http', members: { ...HTTP_MEMBERS, sslverify: to('sslverify', 'bool') } },
  throttle: { ours: 'throttle', members: { 'throttle-group': to('throttleGroup', 'str'), file: to('file', 'ref') } },
  blkdebug: {
    ours: 'blkdebug',
    members: {
      image: to('file', 'ref'),
      config: refused('str'),
      align: to('align', 'int'),
      'max-transfer': to('maxTransfer', 'int'),
      'opt-write-zero': none('int'),
      'max-write-zero': none('int'),
      'opt-discard': none('int'),
      'max-discard': none('int'),
      'inject-error': to('rules', 'inject-error'),
      'set-state': refused('list'),
      'take-child-perms': refused('list'),
      'unshare-child-perms': refused('list'),
    },
  },
  rbd: {
    ours: 'rbd',
    members: {
      pool: to('pool', 'str'),
      namespace: to('namespace', 'str'),
      image: to('image', 'str'),
      conf: to('conf', 'str'),
      snapshot: to('snapshot', 'str'),
      encrypt: refused('str'),
      user: to('user', 'str'),
      'auth-client-required': refused('str'),
      'key-secret': to('keySecret', 'str'),
      server: refused('str'),
    },
  },
};

/** QAPI BlockdevDriver values QEMU 7.2 knows that this server does not open. */
const OTHER_QEMU_DRIVERS = [
  'blklogwrites', 'blkreplay', 'blkverify', 'bochs', 'cloop', 'compress', 'copy-before-write', 'copy-on-read', 'dmg',
  'snapshot-access', 'ftp', 'ftps', 'gluster', 'host_cdrom', 'io_uring', 'iscsi', 'luks', 'nfs', 'nvme', 'nvme-io_uring',
  'parallels', 'preallocate', 'qcow', 'qed', 'quorum', 'replication', 'ssh', 'virtio-blk-vfio-pci',
  'virtio-blk-vhost-user', 'virtio-blk-vhost-vdpa', 'vvfat',
];

/** Members every node takes (QAPI BlockdevOptions' base), in QAPI order after `driver`. */
const COMMON = ['node-name', 'discard', 'cache', 'read-only', 'auto-read-only', 'force-share', 'detect-zeroes'];

/** Finds what a child given by name refers to (QEMU bdrv_lookup_bs: a drive's id, else a node name). */
export type NodeLookup = (name: string) => BlockNode | undefined;

/** The translated options and the node names they ask for (to refuse duplicates before opening). */
export interface TranslatedOptions {
  readonly options: NodeOptions;
  readonly nodeNames: readonly string[];
}

/**
 * A scalar as QEMU's keyval input visitor reads it from a command line (`--blockdev
 * size=1048576,read-only=on`): every value is a string there, converted by the member's type.
 */
function fromKeyval(value: unknown, type: MemberType, path: string): unknown {
  if (typeof value !== 'string') return value;
  if (type === 'int') {
    if (!/^-?(0x[0-9a-f]+|\d+)$/i.test(value)) throw generic(`Parameter '${path}' expects an integer`);
    return Number(value);
  }
  if (type === 'bool') {
    if (value === 'on' || value === 'yes' || value === 'true') return true;
    if (value === 'off' || value === 'no' || value === 'false') return false;
    throw generic(`Parameter '${path}' expects 'on' or 'off'`);
  }
  return value;
}

function checkType(value: unknown, type: MemberType, path: string): void {
  const expected = (what: string) => generic(`Invalid parameter type for '${path}', expected: ${what}`);
  if (Array.isArray(type)) {
    if (typeof value !== 'string') throw expected('string');
    // QEMU's enum visitor names the member alone, not its path.
    if (!type.includes(value)) throw generic(`Parameter '${path.slice(path.lastIndexOf('.') + 1)}' does not accept value '${value}'`);
    return;
  }
  switch (type) {
    case 'str':
      if (typeof value !== 'string') throw expected('string');
      return;
    case 'int':
      if (int64Value(value) === undefined) throw expected('integer');
      return;
    case 'bool':
      if (typeof value !== 'boolean') throw expected('boolean');
      return;
    case 'list':
      // keyval spells a list as an object keyed 0, 1, …
      if (typeof value !== 'object' || value === null) throw expected('array');
      return;
    default:
      return;
  }
}

/** QAPI SocketAddress (inet or unix) as our nbd driver's `server`. */
function socketAddress(value: unknown, path: string): Record<string, unknown> {
  const o = dict(value, path);
  const type = o.type;
  if (type === undefined) throw generic(`Parameter '${path}.type' is missing`);
  checkType(type, ['inet', 'unix', 'vsock', 'fd'], `${path}.type`);
  const fields: Record<string, MemberType> =
    type === 'inet' ? { host: 'str', port: 'str', numeric: 'bool', to: 'int', ipv4: 'bool', ipv6: 'bool', 'keep-alive': 'bool', mptcp: 'bool' } : type === 'unix' ? { path: 'str', abstract: 'bool', tight: 'bool' } : {};
  const out: Record<string, unknown> = { type };
  for (const [key, t] of Object.entries(fields)) {
    const v = o[key];
    if (v === undefined) {
      if (key === 'host' || key === 'port' || key === 'path') throw generic(`Parameter '${path}.${key}' is missing`);
      continue;
    }
    checkType(v, t, `${path}.${key}`);
    if (key === 'host' || key === 'port' || key === 'path') out[key] = v;
    else if (v !== false) throw generic(`Parameter '${path}.${key}' is not supported by this server`);
  }
  for (const key of Object.keys(o)) if (key !== 'type' && !(key in fields)) throw generic(`Parameter '${path}.${key}' is unexpected`);
  if (type !== 'inet' && type !== 'unix') throw generic(`Parameter '${path}.type': only inet and unix sockets are supported by this server`);
  return out;
}

/** QAPI BlockdevCacheOptions: direct and no-flush. Ours writes through the page cache and honours every flush, never weaker than asked. */
function cacheOptions(value: unknown, path: string): void {
  const o = dict(value, path);
  for (const key of ['direct', 'no-flush']) if (o[key] !== undefined) checkType(o[key], 'bool', `${path}.${key}`);
  for (const key of Object.keys(o)) if (key !== 'direct' && key !== 'no-flush') throw generic(`Parameter '${path}.${key}' is unexpected`);
}

/**
 * Translates QAPI BlockdevOptions into our node options. `lookup` resolves a child given by
 * name (QEMU's "Cannot find device='x' nor node-name='x'" when it finds nothing). Throws
 * QmpError (GenericError) with QEMU's texts; nothing is opened here.
 */
export function translateBlockdevOptions(args: Args, lookup: NodeLookup, keyval = false): TranslatedOptions {
  const names: string[] = [];
  const options = translate(keyval ? coerceTree(args, '') : args, '', lookup, names, { forceShare: false, readOnly: false });
  if (options.nodeName === undefined) throw generic("'node-name' must be specified for the root node");
  return { options, nodeNames: names };
}

/** What a child inherits from its parent (QEMU bdrv_inherited_options): force-share and read-only. */
interface Inherited {
  readonly forceShare: boolean;
  readonly readOnly: boolean;
}

function translate(args: Args, prefix: string, lookup: NodeLookup, names: string[], inherited: Inherited): NodeOptions {
  const at = (key: string) => `${prefix}${key}`;
  const driverName = args.driver;
  if (driverName === undefined) throw generic(`Parameter '${at('driver')}' is missing`);
  if (typeof driverName !== 'string') throw generic(`Invalid parameter type for '${at('driver')}', expected: string`);
  const table = DRIVERS[driverName];
  if (table === undefined) {
    if (OTHER_QEMU_DRIVERS.includes(driverName)) throw generic(`Driver '${driverName}' is not supported by this server`);
    throw generic(`Parameter '${at('driver')}' does not accept value '${driverName}'`);
  }
  const out: Record<string, unknown> = { driver: table.ours };
  const nodeName = args['node-name'];
  if (nodeName !== undefined) {
    checkType(nodeName, 'str', at('node-name'));
    out.nodeName = nodeName;
  }
  if (args.discard !== undefined) checkType(args.discard, ['ignore', 'unmap'], at('discard'));
  if (args.cache !== undefined) cacheOptions(args.cache, at('cache'));
  if (args['read-only'] !== undefined) {
    checkType(args['read-only'], 'bool', at('read-only'));
    out.readOnly = args['read-only'];
  }
  // auto-read-only lets QEMU fall back to read-only where read-write fails; we open as asked.
  if (args['auto-read-only'] !== undefined) checkType(args['auto-read-only'], 'bool', at('auto-read-only'));
  let forceShare = inherited.forceShare;
  if (args['force-share'] !== undefined) {
    checkType(args['force-share'], 'bool', at('force-share'));
    forceShare = args['force-share'] as boolean;
  }
  const detectZeroes = args['detect-zeroes'];
  if (detectZeroes !== undefined) checkType(detectZeroes, ['off', 'on', 'unmap'], at('detect-zeroes'));

  for (const [key, member] of Object.entries(table.members)) {
    const value = args[key];
    if (value === undefined) {
      if (isRequired(driverName, key)) throw generic(`Parameter '${at(key)}' is missing`);
      continue;
    }
    const path = at(key);
    let converted: unknown = value;
    if (member.type === 'ref' || member.type === 'ref-or-null') {
      converted = childRef(value, member.type === 'ref-or-null', path, lookup, names, { forceShare, readOnly: (out.readOnly as boolean | undefined) ?? inherited.readOnly });
    } else if (member.type === 'socket') {
      converted = socketAddress(value, path);
    } else if (member.type === 'inject-error') {
      converted = blkdebugRules(value, path);
    } else {
      checkType(value, member.type, path);
      // An int64 past 2^53 goes on only where a double holds it exactly (a power of two); the options take numbers.
      if (typeof value === 'bigint') {
        converted = Number(value);
        if (BigInt(converted as number) !== value) throw generic(`Parameter '${path}': ${value} is beyond 2^53 and not exact as a double, which this server cannot hold`);
      }
    }
    if (member.effect === 'none') continue;
    if (member.effect === 'refused') throw generic(`Parameter '${path}' is not supported by this server`);
    const v = member.value ? member.value(converted) : converted;
    if (v !== undefined) out[member.to!] = v;
  }
  for (const key of Object.keys(args)) {
    if (key !== 'driver' && !COMMON.includes(key) && !Object.hasOwn(table.members, key)) throw generic(`Parameter '${at(key)}' is unexpected`);
  }
  if (typeof nodeName === 'string') {
    if (!isWellFormedId(nodeName)) throw generic(`Invalid node-name: '${nodeName}'`);
    names.push(nodeName);
  }
  if (detectZeroes !== undefined && detectZeroes !== 'off') throw generic(`Parameter '${at('detect-zeroes')}': only 'off' is supported by this server`);
  if (forceShare) {
    if (((out.readOnly as boolean | undefined) ?? inherited.readOnly) !== true) throw generic('force-share=on can only be used with read-only images');
    if (table.ours === 'file') out.forceShare = true;
  }
  return out as NodeOptions;
}

/** The scalar types of the members every node takes. */
const COMMON_TYPES: Readonly<Record<string, MemberType>> = { 'read-only': 'bool', 'auto-read-only': 'bool', 'force-share': 'bool' };

/** Keyval options (strings) with their scalars converted by the driver's member types, children included. */
function coerceTree(args: Args, prefix: string): Args {
  const table = typeof args.driver === 'string' ? DRIVERS[args.driver] : undefined;
  const out: Args = {};
  for (const [key, value] of Object.entries(args)) {
    const type = table?.members[key]?.type ?? COMMON_TYPES[key];
    if ((type === 'ref' || type === 'ref-or-null') && typeof value === 'object' && value !== null && !Array.isArray(value)) out[key] = coerceTree(value as Args, `${prefix}${key}.`);
    else if (key === 'cache' && typeof value === 'object' && value !== null) out[key] = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fromKeyval(v, 'bool', `${prefix}cache.${k}`)]));
    else out[key] = type === undefined ? value : fromKeyval(value, type, `${prefix}${key}`);
  }
  return out;
}

/** The members QAPI requires of a driver (beyond `driver`). */
function isRequired(driver: string, key: string): boolean {
  switch (key) {
    case 'file':
      return driver !== 'blkdebug';
    case 'image':
      return driver === 'blkdebug' || driver === 'rbd';
    case 'filename':
    case 'url':
    case 'server':
    case 'throttle-group':
    case 'pool':
      return true;
    default:
      return false;
  }
}

/** A BlockdevRef: inline options (a child node, read-only like its parent unless told) or an existing node's name. */
function childRef(value: unknown, nullable: boolean, path: string, lookup: NodeLookup, names: string[], inherited: Inherited): unknown {
  if (value === null) {
    if (nullable) return null;
    throw generic(`Invalid parameter type for '${path}', expected: BlockdevRef`);
  }
  if (typeof value === 'string') {
    const node = lookup(value);
    if (node === undefined) throw generic(`Cannot find device='${value}' nor node-name='${value}'`);
    return node;
  }
  if (typeof value !== 'object' || Array.isArray(value)) throw generic(`Invalid parameter type for '${path}', expected: ${nullable ? 'BlockdevRefOrNull' : 'BlockdevRef'}`);
  return translate(value as Args, `${path}.`, lookup, names, inherited);
}
