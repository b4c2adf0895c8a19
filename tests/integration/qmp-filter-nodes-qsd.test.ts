// Job filter nodes against qemu-storage-daemon: while a commit (intermediate and active), a
// stream or a mirror runs (held back by speed 1), query-named-block-nodes lists the filter QEMU
// inserts (commit_top, mirror_top, copy-on-read) with the same shape, under `filter-node-name`
// or a generated `#block…` name; the name is taken while the job runs (the same errors for a
// job, a blockdev-add, a malformed name) and free again once it is cancelled.
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BlockNode } from '../../src/node/node.js';
import { qemuImg as img, qemuIo as io } from '../helpers/qemu-images.js';
import { type QmpClient, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveQsdTools, qsdSuite } from '../helpers/qsd-suite.js';

const can = haveQsdTools;
const suite = qsdSuite('filter-nodes-');

const NAMES = ['base', 'mid', 'top', 'tgt', 'spare'] as const;
const BACKING: Record<string, string | null> = { base: null, mid: 'base', top: 'mid', tgt: null, spare: null };

/** base ← mid ← top (8 MiB, data at every level) and two empty 8 MiB images (tgt, spare), in `at`. */
function makeImages(at: string): void {
  mkdirSync(at, { recursive: true });
  const p = (n: string) => join(at, `${n}.qcow2`);
  img('create', '-q', '-f', 'qcow2', p('base'), '8M');
  io(p('base'), ['write -P 0x11 0 4M']);
  img('create', '-q', '-f', 'qcow2', '-b', p('base'), '-F', 'qcow2', p('mid'));
  io(p('mid'), ['write -P 0x22 1M 2M']);
  img('create', '-q', '-f', 'qcow2', '-b', p('mid'), '-F', 'qcow2', p('top'));
  io(p('top'), ['write -P 0x33 2M 1M']);
  img('create', '-q', '-f', 'qcow2', p('tgt'), '8M');
  img('create', '-q', '-f', 'qcow2', p('spare'), '8M');
}

function qsdArgs(at: string): string[] {
  return NAMES.flatMap((n) => [
    '--blockdev',
    `driver=file,node-name=${n}-file,filename=${join(at, `${n}.qcow2`)}`,
    '--blockdev',
    `driver=qcow2,node-name=${n},file=${n}-file${BACKING[n] ? `,backing=${BACKING[n]}` : ''}`,
  ]);
}

async function ourNodes(at: string): Promise<void> {
  const added = new Map<string, BlockNode>();
  for (const n of NAMES) {
    const file = await suite.layer.addNode({ driver: 'file', nodeName: `${n}-file`, filename: join(at, `${n}.qcow2`) });
    const backing = BACKING[n];
    added.set(n, await suite.layer.addNode({ driver: 'qcow2', nodeName: n, file, backing: backing ? added.get(backing)! : null }));
  }
}

type Node = { 'node-name': string; drv: string; ro: boolean; file: string; backing_file_depth: number; backing_file?: string; image: Record<string, unknown> };
const FILTER_DRIVERS = ['commit_top', 'mirror_top', 'copy-on-read'];

/** The filters of a query-named-block-nodes answer, in a shape both daemons share (generated names as `#block`). */
async function filters(qmp: QmpClient): Promise<Record<string, unknown>[]> {
  const nodes = (await qmp.ok('query-named-block-nodes', { flat: true })) as Node[];
  return nodes
    .filter((n) => FILTER_DRIVERS.includes(n.drv))
    .map((n) => ({
      'node-name': n['node-name'].replace(/^#block\d{3,}$/, '#block'),
      drv: n.drv,
      ro: n.ro,
      backing_file_depth: n.backing_file_depth,
      backing_file: n.backing_file,
      image: { format: n.image.format, 'virtual-size': n.image['virtual-size'], 'cluster-size': n.image['cluster-size'], 'dirty-flag': n.image['dirty-flag'], 'backing-image': n.image['backing-image'] },
      // QEMU names the file of a chain built by node name with a json: filename (the node's own file last); ours is the image file's name.
      filtered: [...n.file.matchAll(/(\w+)\.qcow2/g)].at(-1)?.[1],
    }));
}

/** Where the script looks: every reply, and the filters listed after chosen steps. */
type Step = { cmd: string; args: Record<string, unknown>; look?: boolean; gone?: string };

async function runScript(qmp: QmpClient, steps: Step[]) {
  const out: unknown[] = [];
  for (const s of steps) {
    const r = await qmp.cmd(s.cmd, s.args);
    out.push(r.error ? { error: r.error } : { ok: s.cmd });
    if (s.look) out.push(await filters(qmp));
    if (s.gone) await gone(qmp, s.gone);
  }
  return out;
}

/** The same script on fresh copies of the same images for QSD and for us. */
async function both(steps: Step[]) {
  const orig = join(suite.dir, 'orig');
  makeImages(orig);
  const theirsDir = join(suite.dir, 'qsd');
  const oursDir = join(suite.dir, 'ours');
  cpSync(orig, theirsDir, { recursive: true });
  cpSync(orig, oursDir, { recursive: true });
  const qsd = await startQsd(suite.dir, qsdArgs(theirsDir));
  suite.daemons.push(qsd);
  const theirs = await runScript(qsd.qmp, steps);
  await qsd.stop();
  suite.daemons.splice(suite.daemons.indexOf(qsd), 1);
  await ourNodes(oursDir);
  const ours = await startOurQmp(suite.layer, suite.dir);
  suite.daemons.push(ours);
  const mine = await runScript(ours.qmp, steps);
  return { theirs, mine, qmp: ours.qmp };
}

/** Cancels job `id` and waits until it is gone. */
const cancel = (id: string): Step => ({ cmd: 'job-cancel', args: { id }, gone: id });

/** Waits until job `id` is gone from query-jobs (the filter is dropped when it concludes). */
async function gone(qmp: QmpClient, id: string): Promise<void> {
  await qmp.waitEvent('JOB_STATUS_CHANGE', (d) => d.id === id && d.status === 'null', 30_000);
}

describe.skipIf(!can)('job filter nodes against qemu-storage-daemon', () => {
  it('intermediate commit: commit_top (read-only) above top-node, generated name; gone after cancel', { timeout: 120_000 }, async () => {
    const steps: Step[] = [{ cmd: 'block-commit', args: { 'job-id': 'c', device: 'top', 'top-node': 'mid', 'base-node': 'base', speed: 1 }, look: true }];
    const r = await both(steps);
    expect(r.mine).toEqual(r.theirs);
    expect(r.theirs[1]).toEqual([expect.objectContaining({ 'node-name': '#block', drv: 'commit_top', ro: true, filtered: 'mid' })]);
    await r.qmp.ok('job-cancel', { id: 'c' });
    await gone(r.qmp, 'c');
    expect(await filters(r.qmp)).toEqual([]);
  });

  it('active commit, stream and mirror: mirror_top / copy-on-read named by filter-node-name, listed together', { timeout: 120_000 }, async () => {
    const steps: Step[] = [
      { cmd: 'block-commit', args: { 'job-id': 'a', device: 'top', speed: 1, 'filter-node-name': 'fa' }, look: true },
      cancel('a'),
      { cmd: 'block-stream', args: { 'job-id': 's', device: 'top', 'base-node': 'base', speed: 1, 'filter-node-name': 'fs' }, look: true },
      { cmd: 'blockdev-mirror', args: { 'job-id': 'm', device: 'tgt', target: 'spare', sync: 'full', speed: 1 }, look: true },
      cancel('s'),
      cancel('m'),
      { cmd: 'query-named-block-nodes', args: {}, look: true },
    ];
    const r = await both(steps);
    expect(r.mine).toEqual(r.theirs);
    expect(r.theirs[1]).toEqual([expect.objectContaining({ 'node-name': 'fa', drv: 'mirror_top', ro: false, filtered: 'top' })]);
    expect((r.theirs[6] as { drv: string }[]).map((f) => f.drv).sort()).toEqual(['copy-on-read', 'mirror_top']);
    expect(r.theirs[10]).toEqual([]);
  });

  it('a filter-node-name in use or malformed gets QEMU errors; the name is free again after the job', { timeout: 120_000 }, async () => {
    const steps: Step[] = [
      { cmd: 'block-commit', args: { 'job-id': 'j', device: 'top', speed: 1, 'filter-node-name': 'mid' } },
      { cmd: 'block-stream', args: { 'job-id': 'j', device: 'top', speed: 1, 'filter-node-name': 'tgt' } },
      { cmd: 'blockdev-mirror', args: { 'job-id': 'j', device: 'top', target: 'tgt', sync: 'full', speed: 1, 'filter-node-name': 'base' } },
      { cmd: 'blockdev-mirror', args: { 'job-id': 'j', device: 'top', target: 'tgt', sync: 'full', speed: 1, 'filter-node-name': '1bad' } },
      { cmd: 'block-stream', args: { 'job-id': 'j', device: 'top', speed: 1, 'filter-node-name': 'bad name' } },
      { cmd: 'block-stream', args: { 'job-id': 'j', device: 'top', speed: 1, 'filter-node-name': '' } },
      { cmd: 'drive-mirror', args: { 'job-id': 'j', device: 'top', target: join(suite.dir, 'x.qcow2'), sync: 'full', 'filter-node-name': 'fx' } },
      { cmd: 'block-commit', args: { 'job-id': 'j', device: 'top', speed: 1, 'filter-node-name': 'fc' }, look: true },
      { cmd: 'block-stream', args: { 'job-id': 'j2', device: 'tgt', speed: 1, 'filter-node-name': 'fc' } },
      { cmd: 'blockdev-add', args: { driver: 'null-co', 'node-name': 'fc' } },
    ];
    const r = await both(steps);
    expect(r.mine).toEqual(r.theirs);
    expect(r.theirs[9]).toEqual({ error: { class: 'GenericError', desc: "Could not create node: Duplicate nodes with node-name='fc'" } });
    await r.qmp.ok('job-cancel', { id: 'j' });
    await gone(r.qmp, 'j');
    await r.qmp.ok('blockdev-add', { driver: 'null-co', 'node-name': 'fc' });
  });
});
