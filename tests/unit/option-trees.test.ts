import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  BlockError,
  BlockLayer,
  blockSetIoThrottle,
  driveStringToOptions,
  fromLibvirtIotune,
  fromQapiLimits,
  parseBlockSetIoThrottle,
  parseDriveString,
  parseIotuneXml,
  parseSize,
  parseThrottleGroupObject,
  queryBlockThrottle,
  splitQemuOpts,
  toBlockSetIoThrottle,
  toDriveString,
  toIotuneXml,
  toLibvirtIotune,
  toQapiLimits,
  toQueryBlockThrottle,
  toThrottleGroupObject,
  VirtualClock,
} from '../../src/index.js';
import { type BlockDriver, defineDriver, type DriverInstance } from '../../src/node/driver.js';
import * as optionsIndex from '../../src/options/index.js';
import { CLI } from '../helpers/cli.js';

const einval = (field?: string) => expect.objectContaining({ name: 'BlockError', code: 'EINVAL', ...(field === undefined ? {} : { field }) });

/** A protocol driver whose instance reports the given alignment; counts closes. */
function alignedDriver(alignment: number, closes: { n: number }): BlockDriver {
  return defineDriver({
    name: 'aligned',
    capabilities: { kind: 'protocol' },
    schema: z.object({}).strict(),
    async open(): Promise<DriverInstance> {
      return {
        alignment,
        length: () => 2 ** 40,
        read: async () => undefined,
        write: async () => undefined,
        flush: async () => undefined,
        discard: async () => undefined,
        blockStatus: async (offset, length) => ({ offset, length, data: true, zero: false, allocated: true, depth: 0 }),
        close: async () => {
          closes.n++;
        },
      };
    },
  });
}

/** `depth` raw nodes on top of a null node: `{ driver: 'raw', file: { driver: 'raw', file: … { driver: 'null' } } }`. */
function nested(depth: number): Record<string, unknown> {
  let o: Record<string, unknown> = { driver: 'null', size: 4096 };
  for (let i = 0; i < depth; i++) o = { driver: 'raw', file: o };
  return o;
}

describe('option trees: cycles and depth', () => {
  it('an option object that contains itself as its file child is refused with EINVAL naming the path, not a stack overflow', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const loop: Record<string, unknown> = { driver: 'raw' };
    loop.file = loop;
    await expect(layer.openNode(loop as never)).rejects.toThrow(einval('file'));
    await expect(layer.openNode(loop as never)).rejects.toThrow(/^file: .*cycle/);
    // A longer loop, two levels down, reported where it closes.
    const a: Record<string, unknown> = { driver: 'raw' };
    const b: Record<string, unknown> = { driver: 'blkdebug', file: a };
    a.file = b;
    await expect(layer.openNode({ driver: 'raw', file: a })).rejects.toThrow(einval('file.file.file'));
    // Through openDrive (which copies the top object) too.
    await expect(layer.openDrive(loop as never)).rejects.toThrow(einval());
    expect(layer.listDrives()).toEqual([]);
    // The same (acyclic) options object under two parents is not a cycle.
    const leaf = { driver: 'null', size: 512 };
    const t1 = await layer.openNode({ driver: 'raw', file: leaf });
    const t2 = await layer.openNode({ driver: 'raw', file: leaf });
    expect(t1.length).toBe(512);
    await Promise.all([t1.unref(), t2.unref()]);
    // A cyclic value inside a driver option is refused by the schema without recursion: an unknown
    // option (strict schema), a typed option given a cyclic object, a child of a driver without children.
    const cyc: Record<string, unknown> = {};
    cyc.self = cyc;
    // Keys the drivers do not take fail to compile too: `as never` lets them through to the runtime check.
    await expect(layer.openNode({ driver: 'null', extra: cyc } as never)).rejects.toThrow(einval('extra'));
    await expect(layer.openNode({ driver: 'null', size: cyc })).rejects.toThrow(einval('size'));
    await expect(layer.openNode({ driver: 'raw', file: { driver: 'null', file: cyc } } as never)).rejects.toThrow(einval('file.file'));
  });

  it('20,000 nested levels are refused with EINVAL (depth cap) instead of overflowing the stack', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const err = await layer.openNode(nested(20_000) as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockError);
    expect(err).toMatchObject({ code: 'EINVAL' });
    expect((err as BlockError).message).toMatch(/nested deeper than \d+ levels/);
    expect((err as BlockError).field).toMatch(/^file(\.file)+$/);
  });

  it('a tree just under the depth cap opens, one level more is refused, and nothing is left open', async () => {
    const { MAX_TREE_DEPTH } = await import('../../src/node/open.js');
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const node = await layer.openNode(nested(MAX_TREE_DEPTH - 1) as never);
    expect(node.length).toBe(4096);
    await node.unref();
    await expect(layer.openNode(nested(MAX_TREE_DEPTH) as never)).rejects.toThrow(einval(Array(MAX_TREE_DEPTH).fill('file').join('.')));
    // Names of the refused tree's nodes were released: the same names open again.
    await expect(layer.openNode({ driver: 'null', nodeName: 'again' })).resolves.toBeDefined();
  });
});

describe('option trees: node names', () => {
  it('a child with the same nodeName as its parent is refused, naming the child field', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    await expect(layer.openNode({ driver: 'raw', nodeName: 'n', file: { driver: 'null', nodeName: 'n' } })).rejects.toThrow(einval('file.nodeName'));
    // Nothing was kept: the name is free again.
    const n = await layer.openNode({ driver: 'null', nodeName: 'n' });
    expect(n.name).toBe('n');
    await n.unref();
    // A failed open releases the names it reserved (the parent's, before its child opened).
    await expect(layer.openNode({ driver: 'raw', nodeName: 'r', offset: 10, file: { driver: 'null', nodeName: 'c', size: 1 } })).rejects.toThrow(einval('offset'));
    const r = await layer.openNode({ driver: 'raw', nodeName: 'r', file: { driver: 'null', nodeName: 'c', size: 1 } });
    expect(r.name).toBe('r');
    await r.unref();
    await expect(layer.openNode({ driver: 'null', nodeName: 'c' })).resolves.toBeDefined();
  });

  it('a node whose descendant two levels down has its nodeName is refused', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const loop = { driver: 'raw', file: { driver: 'raw', nodeName: 'x', file: { driver: 'null', nodeName: 'x' } } };
    await expect(layer.openNode(loop)).rejects.toThrow(einval('file.file.nodeName'));
  });

  it('two concurrent openNode calls with one nodeName: exactly one succeeds, the other gets EINVAL on nodeName', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const results = await Promise.allSettled([layer.openNode({ driver: 'null', nodeName: 'same' }), layer.openNode({ driver: 'null', nodeName: 'same' })]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(rejected.reason).toMatchObject({ code: 'EINVAL', field: 'nodeName' });
    expect(rejected.reason.message).toMatch(/^nodeName: a node named 'same' already exists/);
  });

  it('two concurrent openDrive calls whose trees share a child nodeName: one is refused, naming the field', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const opts = () => ({ driver: 'raw', file: { driver: 'null', nodeName: 'leaf' } });
    const results = await Promise.allSettled([layer.openDrive(opts()), layer.openDrive(opts())]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason).toMatchObject({ code: 'EINVAL', field: 'file.nodeName' });
    expect(layer.listDrives()).toHaveLength(1);
  });

  it('a generated name never collides with a user-chosen one', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const first = await layer.openNode({ driver: 'null' });
    const m = /^#null(\d+)$/.exec(first.name)!;
    // Take the next few generated names by hand.
    for (let i = 1; i <= 3; i++) await layer.openNode({ driver: 'null', nodeName: `#null${Number(m[1]) + i}` });
    const next = await layer.openNode({ driver: 'null' });
    expect(next.name).toMatch(/^#null\d+$/);
  });
});

describe('option trees: alignment', () => {
  const open = async (alignment: number) => {
    const closes = { n: 0 };
    const layer = new BlockLayer({ clock: new VirtualClock(), drivers: [alignedDriver(alignment, closes)] });
    const result = await layer.openNode({ driver: 'aligned' }).then(
      (n) => n.alignment,
      (e: unknown) => e,
    );
    return { result, closes: closes.n };
  };

  it('alignments beyond 32 bits that only look like powers of two in 32-bit arithmetic are refused (3·2^32, 2^31+2^32)', async () => {
    for (const a of [3 * 2 ** 32, 2 ** 32 + 2 ** 31, 5 * 2 ** 33]) {
      const { result, closes } = await open(a);
      expect(result).toMatchObject({ code: 'EINVAL' });
      expect((result as Error).message).toMatch(new RegExp(`alignment ${a} is not a power of two`));
      // The driver instance that was opened is closed again.
      expect(closes).toBe(1);
    }
  });

  it('non-integer, negative and too large alignments are refused; powers of two up to 2^30 are accepted', async () => {
    for (const a of [1.5, 0.5, -4, 2 ** 31, 2 ** 32, 2 ** 52, Number.NaN, Number.POSITIVE_INFINITY, 3, 4097]) {
      const { result } = await open(a);
      expect(result, String(a)).toMatchObject({ code: 'EINVAL' });
    }
    for (const a of [1, 512, 4096, 2 ** 20, 2 ** 30]) expect((await open(a)).result).toBe(a);
    // 0 means "no alignment" (as `undefined` would): 1.
    expect((await open(0)).result).toBe(1);
  });
});

describe('option trees: throttle group names', () => {
  it('createThrottleGroup refuses an empty name and names that are not QEMU object ids, with field name', () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    for (const bad of ['', '1abc', '-a', '_a', 'a b', 'a,b', 'a/b', 'é', ' a']) {
      expect(() => layer.createThrottleGroup(bad), JSON.stringify(bad)).toThrow(einval('name'));
    }
    for (const bad of [undefined, null, 42, {}, ['a']]) {
      expect(() => layer.createThrottleGroup(bad as never), String(bad)).toThrow(einval('name'));
    }
    expect(layer.groups.list()).toEqual([]);
    for (const ok of ['a', 'tg0', 'A-b.c_d', 'x9']) expect(layer.createThrottleGroup(ok).name).toBe(ok);
  });

  it('the registry refuses an empty or non-string name for implicit groups too (obtain)', () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    for (const bad of ['', undefined, null, 7]) expect(() => layer.groups.obtain(bad as never)).toThrow(einval('name'));
    // Implicit groups follow the -drive rule (any non-empty string), as in QEMU.
    expect(layer.groups.obtain('any name, really').name).toBe('any name, really');
  });
});

describe('option parsers refuse input of the wrong type with EINVAL', () => {
  const bad: unknown[] = [null, undefined, 42, 'a string', ['an', 'array']];
  const badObjects = bad.filter((b) => typeof b !== 'string');
  const badStrings = badObjects.concat({});
  const layer = new BlockLayer({ clock: new VirtualClock() });
  const fakeDrive = { getLimits: () => null, setLimits: () => undefined };

  const calls: [string, unknown[], (v: unknown) => unknown][] = [
    ['parseBlockSetIoThrottle', badObjects.concat('a string'), (v) => parseBlockSetIoThrottle(v as never)],
    ['blockSetIoThrottle args', badObjects.concat('a string'), (v) => blockSetIoThrottle(layer, v as never)],
    ['blockSetIoThrottle layer', badObjects.concat('a string'), (v) => blockSetIoThrottle(v as never, { device: 'd', bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 })],
    ['fromQapiLimits', badObjects.concat('a string'), (v) => fromQapiLimits(v as never)],
    ['fromQapiLimits current', badObjects.filter((b) => b !== undefined).concat('a string'), (v) => fromQapiLimits({}, v as never)],
    ['toQapiLimits', badObjects.concat('a string'), (v) => toQapiLimits(v as never)],
    ['toBlockSetIoThrottle', badObjects.concat('a string'), (v) => toBlockSetIoThrottle(v as never, { device: 'd' })],
    ['toBlockSetIoThrottle target', badObjects.concat('a string'), (v) => toBlockSetIoThrottle({}, v as never)],
    ['toQueryBlockThrottle', badObjects.filter((b) => b !== null).concat('a string'), (v) => toQueryBlockThrottle(v as never)],
    ['queryBlockThrottle', badObjects.concat('a string'), (v) => queryBlockThrottle(v as never)],
    ['parseThrottleGroupObject', badObjects, (v) => parseThrottleGroupObject(v as never)],
    ['toThrottleGroupObject id', badObjects.concat(''), (v) => toThrottleGroupObject(v as never, {})],
    ['toThrottleGroupObject limits', badObjects.concat('a string'), (v) => toThrottleGroupObject('tg', v as never)],
    ['fromLibvirtIotune', badObjects.concat('a string'), (v) => fromLibvirtIotune(v as never)],
    ['fromLibvirtIotune value', [null, ['1'], {}, true], (v) => fromLibvirtIotune({ total_iops_sec: v } as never)],
    ['toLibvirtIotune', badObjects.concat('a string'), (v) => toLibvirtIotune(v as never)],
    ['toIotuneXml', badObjects.concat('a string'), (v) => toIotuneXml(v as never)],
    ['parseIotuneXml', badStrings, (v) => parseIotuneXml(v as never)],
    ['parseDriveString', badStrings, (v) => parseDriveString(v as never)],
    ['driveStringToOptions', badStrings, (v) => driveStringToOptions(v as never)],
    ['driveStringToOptions options', [null, 42, 'a string', ['x']], (v) => driveStringToOptions('file=x', v as never)],
    ['splitQemuOpts', badStrings, (v) => splitQemuOpts(v as never)],
    ['toDriveString', badObjects.concat('a string'), (v) => toDriveString(v as never)],
    ['toDriveString options', [null, 42, 'a string', ['x']], (v) => toDriveString({}, v as never)],
    ['parseSize', [null, undefined, ['1'], {}, true], (v) => parseSize(v as never)],
    ['parseErrorAction', [null, undefined, 42, ['stop'], {}], (v) => optionsIndex.parseErrorAction(v, 'write')],
    ['parseErrorAction direction', [null, undefined, 42, 'both', ['read']], (v) => optionsIndex.parseErrorAction('stop', v as never)],
    ['parseDriveErrorAction', [null, undefined, 42, ['stop'], {}], (v) => optionsIndex.parseDriveErrorAction(v as never, 'write')],
  ];

  for (const [name, inputs, call] of calls) {
    it(`${name}: ${inputs.map((v) => JSON.stringify(v) ?? 'undefined').join(', ')}`, () => {
      for (const v of inputs) expect(() => call(v), `${name}(${JSON.stringify(v)})`).toThrow(einval());
    });
  }

  it('covers every function exported by src/options/index.ts; valid inputs still work', () => {
    const tested = new Set(calls.map(([n]) => n.split(' ')[0]));
    const exported = Object.entries(optionsIndex)
      .filter(([, v]) => typeof v === 'function')
      .map(([k]) => k);
    for (const name of exported) expect(tested.has(name), name).toBe(true);
    // toQueryBlockThrottle(null) means unthrottled; fakes with the right shape are used; sizes parse.
    expect(toQueryBlockThrottle(null)).toEqual({ bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 });
    expect(queryBlockThrottle(fakeDrive)).toMatchObject({ iops: 0 });
    expect(parseSize('1M')).toBe(2 ** 20);
    expect(parseSize(7)).toBe(7);
    expect(() => parseSize(null as never)).toThrow(einval());
  });
});

describe('option trees: limits through openDrive name the throttle field', () => {
  it('an out-of-range limit given to openDrive({ throttle }) names throttle.iopsTotal', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    // 1e15+1 (a safe integer) and 1e16 (beyond 2^53: a whole number too, refused by the range rule).
    for (const iopsTotal of [1e15 + 1, 1e16, 2 ** 70]) {
      const err = await layer.openDrive({ driver: 'null', size: 1, throttle: { iopsTotal } }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'EINVAL', field: 'throttle.iopsTotal' });
      expect((err as Error).message).toBe('throttle.iopsTotal: bps/iops/max values must be within [0, 1000000000000000]');
    }
    // Every rule, not only the range: pairs are named with the prefix too.
    await expect(layer.openDrive({ driver: 'null', size: 1, throttle: { bpsTotal: 1, bpsRead: 1 } })).rejects.toThrow(
      /^throttle\.bpsTotal, throttle\.bpsRead: /,
    );
    await expect(layer.openDrive({ driver: 'null', size: 1, throttle: { iopsTotalMax: 5 } })).rejects.toThrow(einval('throttle.iopsTotalMax'));
    // Nothing was opened: no drive, and the id is free.
    expect(layer.listDrives()).toEqual([]);
    const d = await layer.openDrive({ id: 'drive0', driver: 'null', size: 1, throttle: { iopsTotal: 10 } });
    expect(d.getLimits()).toEqual({ iopsTotal: 10, group: 'drive0' });
    // setLimits itself keeps the names the caller wrote there.
    expect(() => d.setLimits({ iopsTotal: 1e16 })).toThrow(einval('iopsTotal'));
    await layer.close();
  });
});

describe('option writers and QOM ids', () => {
  it('writers refuse unknown limit names and non-integers with EINVAL naming the field (not a plain Error)', () => {
    expect(() => toDriveString({ iopps: 1 } as never, { legacy: true })).toThrow(einval('throttle.iopps'));
    expect(() => toDriveString({ iopps: 1 } as never)).toThrow(einval('throttle.iopps'));
    expect(() => toLibvirtIotune({ iopsTotal: 1.5 })).toThrow(einval('throttle.iopsTotal'));
    expect(() => toIotuneXml({ group: '' })).toThrow(einval('throttle.group'));
    expect(() => toBlockSetIoThrottle({ bogus: 1 } as never, { device: 'd' })).toThrow(einval('throttle.bogus'));
    expect(() => toQapiLimits({ group: 'g' } as never)).toThrow(einval('limits.group'));
    expect(() => toQueryBlockThrottle({ iopsTotal: 'x' } as never)).toThrow(einval('limits.iopsTotal'));
    expect(() => toQueryBlockThrottle({ iopsTotal: 1 }, 42 as never)).toThrow(einval('group'));
    expect(() => fromLibvirtIotune({ group_name: null } as never)).toThrow(einval('group_name'));
  });

  it("QOM throttle-group ids follow QEMU's id rule (Parameter 'id' expects an identifier)", () => {
    for (const id of ['1tg', 'tg 0', '-tg', 'tg/0', 'tg,x']) {
      expect(() => parseThrottleGroupObject({ 'qom-type': 'throttle-group', id }), id).toThrow(einval('id'));
      expect(() => parseThrottleGroupObject({ 'qom-type': 'throttle-group', id }), id).toThrow(/^Parameter 'id' expects an identifier/);
      expect(() => toThrottleGroupObject(id, {}), id).toThrow(einval('id'));
    }
    expect(() => parseThrottleGroupObject('throttle-group,id=9')).toThrow(einval('id'));
    for (const id of ['tg0', 'A.b-c_d']) expect(parseThrottleGroupObject(toThrottleGroupObject(id, { iopsTotal: 3 }))).toEqual({ id, limits: { iopsTotal: 3 } });
  });

  it('limits beyond 2^53 get the range rule, not "must be a whole number"; iopsSize beyond 2^53 is refused', async () => {
    const { validateLimits } = await import('../../src/throttle/limits.js');
    expect(() => validateLimits({ bpsRead: 2 ** 60 })).toThrow('bpsRead: bps/iops/max values must be within [0, 1000000000000000]');
    expect(() => validateLimits({ iopsTotal: 1, iopsTotalMax: 2, iopsTotalMaxLength: 2 ** 60 })).toThrow(/^iopsTotalMaxLength: value must be in the range/);
    expect(() => validateLimits({ iopsTotal: 1, iopsSize: 2 ** 60 })).toThrow(einval('iopsSize'));
    expect(() => validateLimits({ iopsTotal: 1.5 })).toThrow('iopsTotal: must be a whole number');
    expect(() => validateLimits({ iopsTotal: Number.POSITIVE_INFINITY })).toThrow(einval('iopsTotal'));
  });
});

describe('unknown-option checks look at own properties only (names of Object.prototype members are unknown options)', () => {
  const PROTO_NAMES = ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty'];
  /** Options as JSON text gives them: `__proto__` is an own key there (in an object literal it would not be). */
  const json = (text: string, key: string): Record<string, unknown> => JSON.parse(text.replace('KEY', key));

  it.each(PROTO_NAMES)('openDrive and openNode refuse "%s" at the top and in a child, like any unknown option', async (key) => {
    const layer = new BlockLayer();
    const top = json('{"driver":"null","size":1048576,"KEY":1}', key);
    expect(Object.hasOwn(top, key)).toBe(true);
    await expect(layer.openDrive(top as never)).rejects.toEqual(einval(key));
    await expect(layer.openNode(top as never)).rejects.toEqual(einval(key));
    const nested = json('{"driver":"raw","file":{"driver":"null","size":1048576,"KEY":1}}', key);
    await expect(layer.openDrive(nested as never)).rejects.toEqual(einval(`file.${key}`));
    await expect(layer.openNode(nested as never)).rejects.toEqual(einval(`file.${key}`));
    // A child role's name is not an Object.prototype member either: `constructor` is not a child of raw.
    const role = json('{"driver":"raw","KEY":{"driver":"null","size":1048576},"file":{"driver":"null","size":1048576}}', key);
    await expect(layer.openDrive(role as never)).rejects.toEqual(einval(key));
    // `"x":1` is refused the same way (the reference).
    await expect(layer.openDrive(json('{"driver":"null","size":1048576,"KEY":1}', 'x') as never)).rejects.toEqual(einval('x'));
    expect(layer.listDrives()).toEqual([]);
    await layer.close();
  });

  it.each(PROTO_NAMES)('a QEMU -drive string with "%s" is an invalid parameter', (key) => {
    expect(() => parseDriveString(`file=a,${key}=1`)).toThrow(expect.objectContaining({ code: 'EINVAL', field: key, message: `Invalid parameter '${key}'` }));
    // With its readonly alias beside it, a prototype name is not taken for an alias of anything.
    expect(() => parseDriveString(`file=a,readonly=on,${key}=1`)).toThrow(expect.objectContaining({ code: 'EINVAL', field: key }));
  });

  it('a json: target of the CLI with "constructor" (top) or "__proto__" (in a child) fails with one line naming the option', () => {
    for (const [target, field] of [
      ['{"driver":"null","size":1048576,"constructor":1}', 'constructor'],
      ['{"driver":"raw","file":{"driver":"null","size":1048576,"__proto__":1}}', 'file.__proto__'],
    ]) {
      const r = spawnSync(process.execPath, [...CLI, 'bench', '--clock', 'virtual', '--runtime', '1', '--iops', '100', '--filename', `json:${target}`], {
        encoding: 'utf8',
      });
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(`blocklayer bench: EINVAL: ${field}: unknown option\n`);
      expect(r.status).toBe(1);
    }
  });

  it('a libvirt <iotune> entity named like an Object.prototype member is an unknown entity', () => {
    for (const key of ['constructor', 'toString', 'hasOwnProperty']) {
      expect(() => parseIotuneXml(`<iotune><total_iops_sec>&${key};</total_iops_sec></iotune>`)).toThrow(/unknown entity '&\w+;'/);
    }
  });
});
