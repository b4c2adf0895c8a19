// Stream and commit over read-only images, against qemu-storage-daemon: a chain opened by
// blockdev-add with its backing nodes read-only (as backing files open), and a top added
// read-only. QEMU reopens the image the job writes read-write for the job and
// read-only after it; the same script gives the same replies, events and read-only flags
// (query-named-block-nodes), and images qemu-img finds equal and clean.
import { cpSync, mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg as img, qemuIo as io } from '../helpers/qemu-images.js';
import { type QmpClient, type QmpEvent, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveQsdTools, qsdSuite } from '../helpers/qsd-suite.js';

const can = haveQsdTools;
const suite = qsdSuite('reopen-jobs-');


/** base ← mid ← top, 8 MiB, data at every level; the backing files named in the headers. */
function makeChain(at: string): void {
  mkdirSync(at, { recursive: true });
  const p = (n: string) => join(at, `${n}.qcow2`);
  img('create', '-q', '-f', 'qcow2', p('base'), '8M');
  io(p('base'), ['write -P 0x11 0 2M', 'write -P 0x44 5M 1M']);
  img('create', '-q', '-f', 'qcow2', '-b', p('base'), '-F', 'qcow2', p('mid'));
  io(p('mid'), ['write -P 0x22 1M 2M', 'write -z 5M 512k']);
  img('create', '-q', '-f', 'qcow2', '-b', p('mid'), '-F', 'qcow2', p('top'));
  io(p('top'), ['write -P 0x33 2560k 1M']);
}

type Step = { cmd: string; args: (at: string) => Record<string, unknown>; until?: { id: string; status: string }; waitReady?: string };

/** The chain as blockdev-add options, backing by node name: base and mid read-only (as backing files open), top as asked. */
const chainOptions = (at: string, readOnlyTop: boolean) =>
  (['base', 'mid', 'top'] as const).map((n, i) => ({
    driver: 'qcow2',
    'node-name': n,
    ...(n !== 'top' || readOnlyTop ? { 'read-only': true } : {}),
    file: { driver: 'file', 'node-name': `${n}-file`, filename: join(at, `${n}.qcow2`) },
    ...(i > 0 ? { backing: ['base', 'mid'][i - 1] } : {}),
  }));

/** Each qcow2 node's name and read-only flag, as query-named-block-nodes shows them. */
async function modes(qmp: QmpClient): Promise<string[]> {
  const nodes = (await qmp.cmd('query-named-block-nodes', {})) as { return: { drv: string; 'node-name': string; ro: boolean }[] };
  return nodes.return
    .filter((n) => n.drv === 'qcow2')
    .map((n) => `${n['node-name']}:${n.ro ? 'ro' : 'rw'}`)
    .sort();
}

async function runScript(qmp: QmpClient, at: string, steps: Step[]) {
  const from = qmp.events.length;
  const replies: unknown[] = [];
  const before = await modes(qmp);
  for (const s of steps) {
    replies.push(await qmp.cmd(s.cmd, s.args(at)));
    if (s.waitReady) await qmp.waitEvent('BLOCK_JOB_READY', (d) => d.device === s.waitReady, 60_000, from);
    if (s.until) await qmp.waitEvent('JOB_STATUS_CHANGE', (d) => d.id === s.until!.id && d.status === s.until!.status, 60_000, from);
  }
  const events: QmpEvent[] = qmp.events.slice(from).map((e) => ({ event: e.event, ...(e.data ? { data: e.data } : {}) }));
  return { replies, events, before, after: await modes(qmp) };
}

/** The same script on copies of one chain, top added with blockdev-add on both daemons. */
async function both(readOnlyTop: boolean, steps: Step[]) {
  const orig = join(suite.dir, 'orig');
  makeChain(orig);
  const theirsDir = join(suite.dir, 'qsd');
  const oursDir = join(suite.dir, 'ours');
  cpSync(orig, theirsDir, { recursive: true });
  cpSync(orig, oursDir, { recursive: true });
  const qsd = await startQsd(suite.dir, chainOptions(theirsDir, readOnlyTop).flatMap((o) => ['--blockdev', JSON.stringify(o)]));
  suite.daemons.push(qsd);
  const theirs = await runScript(qsd.qmp, theirsDir, steps);
  await qsd.stop();
  suite.daemons.splice(suite.daemons.indexOf(qsd), 1);
  const ours = await startOurQmp(suite.layer, suite.dir);
  suite.daemons.push(ours);
  for (const o of chainOptions(oursDir, readOnlyTop)) expect(await ours.qmp.cmd('blockdev-add', o)).toEqual({ return: {} });
  const mine = await runScript(ours.qmp, oursDir, steps);
  await ours.stop();
  suite.daemons.splice(suite.daemons.indexOf(ours), 1);
  await suite.layer.close();
  return { theirs, mine, orig, theirsDir, oursDir };
}

const backingOf = (image: string) => (JSON.parse(img('info', '--output=json', image)) as { 'backing-filename'?: string })['backing-filename'];
const compare = (a: string, b: string) => img('compare', a, b);
const FINISH = (id: string) => ({ id, status: 'null' });

describe.skipIf(!can)('stream and commit reopen read-only images, as qemu-storage-daemon does', () => {
  it('block-commit of mid into a read-only base: the base is written, then read-only again; top points at base', { timeout: 120_000 }, async () => {
    const r = await both(false, [{ cmd: 'block-commit', args: () => ({ 'job-id': 'c0', device: 'top', 'top-node': 'mid', 'base-node': 'base' }), until: FINISH('c0') }]);
    expect(r.theirs.replies).toEqual([{ return: {} }]);
    expect(r.mine).toEqual(r.theirs);
    expect(r.theirs.before).toEqual(['base:ro', 'mid:ro', 'top:rw']);
    // mid stays: blockdev-add's nodes belong to the monitor.
    expect(r.theirs.after).toEqual(['base:ro', 'mid:ro', 'top:rw']);
    for (const at of [r.theirsDir, r.oursDir]) {
      expect(basename(backingOf(join(at, 'top.qcow2'))!)).toBe('base.qcow2');
      for (const n of ['top', 'base']) img('check', '-q', join(at, `${n}.qcow2`));
      compare(join(r.orig, 'mid.qcow2'), join(at, 'base.qcow2'));
      compare(join(r.orig, 'top.qcow2'), join(at, 'top.qcow2'));
    }
  });

  it('block-commit under a read-only overlay: its header names the base, written through a brief reopen; all read-only after', { timeout: 120_000 }, async () => {
    const r = await both(true, [{ cmd: 'block-commit', args: () => ({ 'job-id': 'c1', device: 'top', 'top-node': 'mid', 'base-node': 'base' }), until: FINISH('c1') }]);
    expect(r.theirs.replies).toEqual([{ return: {} }]);
    expect(r.mine).toEqual(r.theirs);
    expect(r.theirs.after).toEqual(['base:ro', 'mid:ro', 'top:ro']);
    for (const at of [r.theirsDir, r.oursDir]) {
      expect(basename(backingOf(join(at, 'top.qcow2'))!)).toBe('base.qcow2');
      for (const n of ['top', 'base']) img('check', '-q', join(at, `${n}.qcow2`));
      compare(join(r.orig, 'top.qcow2'), join(at, 'top.qcow2'));
    }
  });

  it('active block-commit into a read-only base: READY, job-complete; the base takes the top’s place read-write', { timeout: 120_000 }, async () => {
    const r = await both(false, [
      { cmd: 'block-commit', args: () => ({ 'job-id': 'a0', device: 'top', 'base-node': 'base' }), waitReady: 'a0' },
      { cmd: 'job-complete', args: () => ({ id: 'a0' }), until: FINISH('a0') },
    ]);
    expect(r.theirs.replies).toEqual([{ return: {} }, { return: {} }]);
    expect(r.mine).toEqual(r.theirs);
    for (const at of [r.theirsDir, r.oursDir]) {
      img('check', '-q', join(at, 'base.qcow2'));
      compare(join(r.orig, 'top.qcow2'), join(at, 'base.qcow2'));
    }
  });

  it('active block-commit into a read-only base, cancelled: QEMU 7.2 leaves the base read-write; the chain is unchanged', { timeout: 120_000 }, async () => {
    const r = await both(false, [
      { cmd: 'block-commit', args: () => ({ 'job-id': 'a1', device: 'top', 'base-node': 'base' }), waitReady: 'a1' },
      { cmd: 'job-cancel', args: () => ({ id: 'a1' }), until: FINISH('a1') },
    ]);
    expect(r.mine.replies).toEqual(r.theirs.replies);
    expect(r.mine.after).toEqual(r.theirs.after);
    expect(r.mine.before).toEqual(r.theirs.before);
    for (const at of [r.theirsDir, r.oursDir]) img('check', '-q', join(at, 'base.qcow2'));
  });

  it('block-stream into a top added read-only: it is written, then read-only again, and stands alone', { timeout: 120_000 }, async () => {
    const r = await both(true, [{ cmd: 'block-stream', args: () => ({ 'job-id': 's0', device: 'top' }), until: FINISH('s0') }]);
    expect(r.theirs.replies).toEqual([{ return: {} }]);
    expect(r.mine).toEqual(r.theirs);
    expect(r.theirs.after).toEqual(['base:ro', 'mid:ro', 'top:ro']);
    for (const at of [r.theirsDir, r.oursDir]) {
      expect(backingOf(join(at, 'top.qcow2'))).toBeUndefined();
      img('check', '-q', join(at, 'top.qcow2'));
      compare(join(r.orig, 'top.qcow2'), join(at, 'top.qcow2'));
    }
  });
});
