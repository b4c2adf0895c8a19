import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, type QmpContext, QmpError, type QmpRequest, runCommand } from '../../src/index.js';
import { qcow2Workspace } from '../helpers/qcow2-workspace.js';

const ws = qcow2Workspace('qmp-commands-');

const req = (execute: string, args: Record<string, unknown> = {}): QmpRequest => ({ execute, arguments: args });
const ctx = (layer: BlockLayer, negotiated = true): QmpContext => ({ layer, session: { negotiated, quitRequested: false } });

async function failure(p: Promise<unknown>): Promise<{ class: string; desc: string }> {
  const e = await p.then(
    () => {
      throw new Error('expected a QmpError');
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(QmpError);
  return { class: (e as QmpError).errorClass, desc: (e as QmpError).message };
}

describe('QMP commands', () => {
  it('qmp_capabilities negotiates the session once; before it every command, known or not, is CommandNotFound', async () => {
    const c = ctx(new BlockLayer(), false);
    const expecting = { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" };
    expect(await failure(runCommand(req('query-block'), c))).toEqual(expecting);
    expect(await failure(runCommand(req('bogus'), c))).toEqual(expecting);
    expect(await failure(runCommand(req('qmp_capabilities', { enable: ['x'] }), c))).toEqual({ class: 'GenericError', desc: "Parameter 'enable' does not accept value 'x'" });
    expect(c.session.negotiated).toBe(false);
    expect(await runCommand(req('qmp_capabilities', { enable: [] }), c)).toEqual({});
    expect(c.session.negotiated).toBe(true);
  });

  it('describes a qcow2 overlay and its backing chain in query-named-block-nodes (flat leaves the chain out of image)', async () => {
    const d = await ws.open('over.qcow2');
    const c = ctx(ws.layer);
    const nodes = (await runCommand(req('query-named-block-nodes'), c)) as Record<string, unknown>[];
    const root = nodes[0];
    const overPath = path.join(ws.dir, 'over.qcow2');
    expect(root).toMatchObject({
      'node-name': d.node.name,
      drv: 'qcow2',
      ro: d.readOnly,
      file: overPath,
      backing_file_depth: 1,
      backing_file: expect.stringContaining('base.qcow2'),
      image: {
        filename: overPath,
        format: 'qcow2',
        'virtual-size': d.length,
        'cluster-size': expect.any(Number),
        'backing-filename': expect.stringContaining('base.qcow2'),
        'backing-image': { format: 'qcow2', filename: expect.stringContaining('base.qcow2') },
      },
    });
    // every node of the graph once: qcow2, its file, the backing qcow2 and its file
    expect(nodes.map((n) => n.drv).sort()).toEqual(['file', 'file', 'qcow2', 'qcow2']);
    expect(new Set(nodes.map((n) => n['node-name'])).size).toBe(nodes.length);
    const flat = (await runCommand(req('query-named-block-nodes', { flat: true }), c)) as { image: Record<string, unknown> }[];
    expect(flat[0].image).not.toHaveProperty('backing-image');
    expect(await failure(runCommand(req('query-named-block-nodes', { flat: 1 }), c))).toEqual({ class: 'GenericError', desc: "Invalid parameter type for 'flat', expected: boolean" });
    await d.close();
  });

  it('lists internal snapshots in the image info', async () => {
    const d = await ws.open('snap.qcow2');
    const block = (await runCommand(req('query-block'), ctx(ws.layer))) as { device: string; inserted: { image: { snapshots?: Record<string, unknown>[] } } }[];
    const snaps = block.find((b) => b.device === d.id)!.inserted.image.snapshots!;
    expect(snaps.map((s) => s.name)).toContain('one');
    expect(snaps[0]).toEqual({
      id: expect.any(String),
      name: expect.any(String),
      'vm-state-size': expect.any(Number),
      'date-sec': expect.any(Number),
      'date-nsec': expect.any(Number),
      'vm-clock-sec': expect.any(Number),
      'vm-clock-nsec': expect.any(Number),
    });
    await d.close();
  });

  it("reports a BlockError from the library as GenericError with the error's message", async () => {
    expect(await failure(runCommand(req('block-export-add', { id: 'x' }), { ...ctx(new BlockLayer()), exports: { add: async () => { throw new BlockError('EINVAL', 'boom'); }, del: async () => {} } }))).toEqual({
      class: 'GenericError',
      desc: 'boom',
    });
  });

  it('refuses query-blockstats query-nodes (only per-drive counters are kept)', async () => {
    const c = ctx(new BlockLayer());
    expect((await failure(runCommand(req('query-blockstats', { 'query-nodes': true }), c))).class).toBe('GenericError');
    expect(await runCommand(req('query-blockstats', { 'query-nodes': false }), c)).toEqual([]);
  });

  it('quit marks the session for the server to stop', async () => {
    const c = ctx(new BlockLayer());
    expect(await runCommand(req('quit'), c)).toEqual({});
    expect(c.session.quitRequested).toBe(true);
  });
});

describe('QMP arguments named like Object.prototype members are unexpected, like any unknown argument', () => {
  const THROTTLE_BASE = { bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 };

  it.each(['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty'])('"%s" (from the JSON text of the command) is refused by every command', async (key) => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'null', size: 1 << 20 });
    const c = ctx(layer);
    const unexpected = { class: 'GenericError', desc: `Parameter '${key}' is unexpected` };
    // As the QMP wire hands them over: parsed JSON, where "__proto__" is an own member.
    const args = (extra: Record<string, unknown>): Record<string, unknown> => JSON.parse(`{"${key}":1${JSON.stringify(extra).slice(1, -1).replace(/^(?=.)/, ',')}}`);
    expect(Object.hasOwn(args({}), key)).toBe(true);
    expect(await failure(runCommand(req('block_set_io_throttle', args({ device: d.id, ...THROTTLE_BASE, iops: 100 })), c))).toEqual(unexpected);
    expect(d.getLimits()).toBeNull();
    for (const command of ['query-block', 'query-blockstats', 'query-named-block-nodes', 'cont', 'query-commands']) {
      expect(await failure(runCommand(req(command, args({})), c))).toEqual(unexpected);
    }
    await layer.close();
  });
});

describe('block_set_io_throttle errors name the arguments as the QMP client spelled them', () => {
  const BASE = { bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 };
  /** A word in camelCase (iopsWriteMaxLength): our option names, never a QMP argument. */
  const CAMEL = /\b[a-z]+[A-Z][A-Za-z]*\b/;

  it('iops_wr_max_length 2^40 with iops_wr_max 20 is applied, as QEMU 7.2 does (it failed naming iopsWriteMaxLength)', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'null', size: 1 << 20 });
    const c = ctx(layer);
    expect(await runCommand(req('block_set_io_throttle', { device: d.id, ...BASE, iops_wr: 10, iops_wr_max: 20, iops_wr_max_length: 2 ** 40 }), c)).toEqual({});
    const [block] = (await runCommand(req('query-block'), c)) as { inserted: Record<string, unknown> }[];
    expect(block.inserted).toMatchObject({ iops_wr: 10, iops_wr_max: 20, iops_wr_max_length: 2 ** 40 });
    // Just past what the rate allows (20 × length > 1e15): QEMU's message, with the QMP names.
    expect(await failure(runCommand(req('block_set_io_throttle', { device: d.id, ...BASE, iops_wr: 10, iops_wr_max: 20, iops_wr_max_length: 5e13 + 1 }), c))).toEqual({
      class: 'GenericError',
      desc: 'iops_wr_max_length, iops_wr_max: burst length too high for this burst rate',
    });
    await layer.close();
  });

  // The text after the names is QEMU 7.2's (checked against qemu-system-x86_64 -qmp).
  it.each([
    [{ bps_max: 20 }, 'bps_max, bps: bps_max/iops_max require corresponding bps/iops values'],
    [{ iops_wr: 10, iops_wr_max: 20, iops_wr_max_length: -1 }, 'iops_wr_max_length, iops_wr_max: burst length too high for this burst rate'],
    [{ bps_rd: 10, bps_rd_max: 20, bps_rd_max_length: 2 ** 64 }, 'bps_rd_max_length, bps_rd_max: burst length too high for this burst rate'],
    [{ iops_rd: 10, iops_rd_max_length: 2 ** 33 }, 'iops_rd_max_length, iops_rd_max: burst length set without burst rate'],
    [{ bps_wr: 10, bps_wr_max: 20, bps_wr_max_length: 0 }, 'bps_wr_max_length: the burst length cannot be 0'],
    [{ iops: 10, iops_max: 5 }, 'iops_max, iops: bps_max/iops_max cannot be lower than bps/iops'],
    [{ bps: 10, bps_wr: 10 }, 'bps, bps_wr: bps/iops/max total values and read/write values cannot be used at the same time'],
    [{ iops_rd: 1e15 + 1 }, 'iops_rd: bps/iops/max values must be within [0, 1000000000000000]'],
    [{ iops_size: 4096 }, 'iops_size: iops size requires an iops value to be set'],
    [{ bps_max_length: 'x' }, "Invalid parameter type for 'bps_max_length', expected: integer"],
  ] as [Record<string, unknown>, string][])('%j: %s', async (args, desc) => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'null', size: 1 << 20 });
    const got = await failure(runCommand(req('block_set_io_throttle', { device: d.id, ...BASE, ...args }), ctx(layer)));
    expect(got).toEqual({ class: 'GenericError', desc });
    expect(got.desc).not.toMatch(CAMEL);
    await layer.close();
  });
});
