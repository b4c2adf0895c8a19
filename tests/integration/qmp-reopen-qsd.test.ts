// blockdev-reopen against qemu-storage-daemon 7.2: the same script over the same two-image chain
// (added by blockdev-add, base read-only), the same replies, the same read-only flags in
// query-named-block-nodes along the way; the images stay clean for qemu-img check.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg as img } from '../helpers/qemu-images.js';
import { type QmpClient, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveQsdTools, qsdSuite } from '../helpers/qsd-suite.js';

const can = haveQsdTools;
const suite = qsdSuite('qmp-reopen-');


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
    const orig = join(suite.dir, 'orig');
    makeChain(orig);
    const theirsDir = join(suite.dir, 'qsd');
    const oursDir = join(suite.dir, 'ours');
    cpSync(orig, theirsDir, { recursive: true });
    cpSync(orig, oursDir, { recursive: true });
    const qsd = await startQsd(suite.dir, chain(theirsDir).flatMap((o) => ['--blockdev', JSON.stringify(o)]));
    suite.daemons.push(qsd);
    const theirs = await run(qsd.qmp, theirsDir);
    await qsd.stop();
    suite.daemons.splice(0);
    const ours = await startOurQmp(suite.layer, suite.dir);
    suite.daemons.push(ours);
    for (const o of chain(oursDir)) expect(await ours.qmp.cmd('blockdev-add', o)).toEqual({ return: {} });
    const mine = await run(ours.qmp, oursDir);
    // backing: null detached the base from mid.
    expect(suite.layer.findNode('mid')!.child('backing')).toBeUndefined();
    expect(suite.layer.findNode('base')!.refCount).toBe(1);
    await ours.stop();
    suite.daemons.splice(0);
    await suite.layer.close();
    const text = (x: unknown[]) => JSON.stringify(x, null, 1).replaceAll(theirsDir, 'DIR').replaceAll(oursDir, 'DIR');
    expect(text(mine)).toBe(text(theirs));
    expect(theirs[0]).toEqual({ return: {} });
    for (const at of [theirsDir, oursDir]) for (const n of ['base', 'mid']) img('check', '-q', join(at, `${n}.qcow2`));
  });
});
