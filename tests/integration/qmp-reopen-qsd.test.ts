// blockdev-reopen against qemu-storage-daemon 7.2: the same script over the same two-image chain
// (added by blockdev-add, base read-only), the same replies, the same read-only flags in
// query-named-block-nodes along the way; the images stay clean for qemu-img check.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { type QmpClient, type QmpDaemon, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveProgram } from '../helpers/tools.js';

const can = haveProgram('qemu-storage-daemon') && haveProgram('qemu-img') && haveProgram('qemu-io');

let dir: string;
const daemons: QmpDaemon[] = [];
let layer: BlockLayer;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-reopen-'));
  layer = new BlockLayer();
});
afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

const img = (...args: string[]) => execFileSync('qemu-img', args, { encoding: 'utf8' });

function makeChain(at: string): void {
  mkdirSync(at, { recursive: true });
  img('create', '-q', '-f', 'qcow2', join(at, 'base.qcow2'), '8M');
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', join(at, 'base.qcow2')], { stdio: 'ignore' });
  img('create', '-q', '-f', 'qcow2', '-b', join(at, 'base.qcow2'), '-F', 'qcow2', join(at, 'mid.qcow2'));
}

const chain = (at: string) => [
  { driver: 'file', 'node-name': 'base-file', filename: join(at, 'base.qcow2') },
  { driver: 'qcow2', 'node-name': 'base', file: 'base-file', 'read-only': true },
  { driver: 'file', 'node-name': 'mid-file', filename: join(at, 'mid.qcow2') },
  { driver: 'qcow2', 'node-name': 'mid', file: 'mid-file', backing: 'base' },
];

type Step = [string, Record<string, unknown>];
const reopen = (...options: Record<string, unknown>[]): Step => ['blockdev-reopen', { options }];
const QUERY: Step = ['query-named-block-nodes', { flat: true }];

const script = (at: string): Step[] => [
  reopen({ driver: 'qcow2', 'node-name': 'base', file: 'base-file', 'read-only': false }),
  QUERY,
  reopen({ driver: 'qcow2', 'node-name': 'mid', file: 'mid-file', 'read-only': true }),
  reopen({ driver: 'qcow2', 'node-name': 'mid', file: 'mid-file', backing: 'base', 'read-only': true }),
  QUERY,
  reopen({ driver: 'raw', 'node-name': 'base', file: 'base-file' }),
  reopen({ driver: 'qcow2', 'node-name': 'nope', file: 'base-file' }),
  reopen({ driver: 'qcow2', file: 'base-file' }),
  ['blockdev-reopen', {}],
  reopen({ driver: 'qcow2', 'node-name': 'base', file: { driver: 'file', filename: join(at, 'base.qcow2') } }),
  reopen({ driver: 'file', 'node-name': 'base-file', filename: join(at, 'mid.qcow2') }),
  reopen({ driver: 'qcow2', 'node-name': 'base', file: 'base-file', 'read-only': true }),
  reopen({ driver: 'file', 'node-name': 'base-file', filename: join(at, 'base.qcow2'), 'read-only': true }),
  QUERY,
  // base's file, given by reference, stays read-only: the whole list is refused, nothing changes.
  reopen({ driver: 'qcow2', 'node-name': 'base', file: 'base-file', 'read-only': false }, { driver: 'qcow2', 'node-name': 'mid', file: 'mid-file', backing: 'base', 'read-only': false }),
  QUERY,
  reopen({ driver: 'file', 'node-name': 'base-file', filename: join(at, 'base.qcow2') }),
  reopen({ driver: 'qcow2', 'node-name': 'mid', file: 'mid-file', backing: 'base', 'read-only': false }),
  reopen({ driver: 'qcow2', 'node-name': 'base', file: 'base-file', bogus: 1 }),
  reopen({ driver: 'qcow2', 'node-name': 'base', file: 'base-file', 'read-only': 'yes' }),
  reopen({ driver: 'qcow2', 'node-name': 'mid', file: 'mid-file', backing: null }),
  QUERY,
];

/** Replies without what differs by nature (paths, sizes on disk): node name, driver, read-only. */
async function run(qmp: QmpClient, at: string): Promise<unknown[]> {
  const out: unknown[] = [];
  for (const [cmd, args] of script(at)) {
    const r = (await qmp.cmd(cmd, args)) as { return?: unknown; error?: unknown };
    if (cmd === 'query-named-block-nodes') {
      const nodes = r.return as { 'node-name': string; drv: string; ro: boolean }[];
      out.push(nodes.map((n) => `${n['node-name']}:${n.drv}:${n.ro ? 'ro' : 'rw'}`).sort());
    } else out.push(r);
  }
  return out;
}

describe.skipIf(!can)('blockdev-reopen against qemu-storage-daemon', () => {
  it('the same script: read-only both ways, a dropped backing node, refused changes and bad arguments', { timeout: 120_000 }, async () => {
    const orig = join(dir, 'orig');
    makeChain(orig);
    const theirsDir = join(dir, 'qsd');
    const oursDir = join(dir, 'ours');
    cpSync(orig, theirsDir, { recursive: true });
    cpSync(orig, oursDir, { recursive: true });
    const qsd = await startQsd(dir, chain(theirsDir).flatMap((o) => ['--blockdev', JSON.stringify(o)]));
    daemons.push(qsd);
    const theirs = await run(qsd.qmp, theirsDir);
    await qsd.stop();
    daemons.splice(0);
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    for (const o of chain(oursDir)) expect(await ours.qmp.cmd('blockdev-add', o)).toEqual({ return: {} });
    const mine = await run(ours.qmp, oursDir);
    // backing: null detached the base from mid.
    expect(layer.findNode('mid')!.child('backing')).toBeUndefined();
    expect(layer.findNode('base')!.refCount).toBe(1);
    await ours.stop();
    daemons.splice(0);
    await layer.close();
    const text = (x: unknown[]) => JSON.stringify(x, null, 1).replaceAll(theirsDir, 'DIR').replaceAll(oursDir, 'DIR');
    expect(text(mine)).toBe(text(theirs));
    expect(theirs[0]).toEqual({ return: {} });
    for (const at of [theirsDir, oursDir]) for (const n of ['base', 'mid']) img('check', '-q', join(at, `${n}.qcow2`));
  });
});
