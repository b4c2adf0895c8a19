// transaction with completion-mode grouped against qemu-storage-daemon: backup jobs that end
// together. Both succeed: each waits for the other, then both finalize; one fails (a blkdebug
// target failing writes) or is cancelled: the other is cancelled too. The same script over the
// same images on both daemons gives the same replies and the same events in the same order.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg as img } from '../helpers/qemu-images.js';
import { type QmpClient, type QmpEvent, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveQsdTools, qsdSuite } from '../helpers/qsd-suite.js';

const can = haveQsdTools;
const suite = qsdSuite('grouped-');


/** Two sources with 4 MiB of data (a node takes one backup here: one copy-before-write user) and two empty targets (8 MiB qcow2 each) for `who`; blockdev-add steps for them, one target behind blkdebug failing every write. */
function setup(who: string) {
  const p = (n: string) => join(suite.dir, `${who}-${n}.qcow2`);
  for (const src of ['src', 'src2']) {
    img('create', '-q', '-f', 'qcow2', p(src), '8M');
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 4M', p(src)], { stdio: 'ignore' });
  }
  for (const t of ['t1', 't2']) img('create', '-q', '-f', 'qcow2', p(t), '8M');
  const node = (name: string) => ({ driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: p(name) } });
  return [
    node('src'),
    node('src2'),
    node('t1'),
    node('t2'),
    { driver: 'blkdebug', 'node-name': 'bad', image: 't2', 'inject-error': [{ event: 'none', iotype: 'write', errno: 5 }] },
  ];
}

const backup = (id: string, target: string, speed = 0) => ({ type: 'blockdev-backup', data: { 'job-id': id, device: id.endsWith('1') ? 'src' : 'src2', target, sync: 'full', ...(speed ? { speed } : {}) } });
const grouped = (...actions: unknown[]) => ({ actions, properties: { 'completion-mode': 'grouped' } });

type Step = { cmd: string; args: Record<string, unknown>; gone?: string[]; wait?: number };

/** Runs the script; replies, and events with the progress of an interrupted job (`offset`) left out: it depends on timing. */
async function runScript(qmp: QmpClient, steps: Step[]): Promise<{ replies: unknown[]; events: QmpEvent[] }> {
  const replies: unknown[] = [];
  for (const s of steps) {
    replies.push(await qmp.cmd(s.cmd, s.args));
    if (s.wait) await new Promise((r) => setTimeout(r, s.wait));
    for (const id of s.gone ?? []) await qmp.waitJobStatus(id, 'null', 20_000);
  }
  const events = qmp.events.map((e) => {
    if ((e.event === 'BLOCK_JOB_CANCELLED' || (e.event === 'BLOCK_JOB_COMPLETED' && e.data?.error !== undefined)) && e.data) {
      const { offset: _, ...data } = e.data;
      return { event: e.event, data };
    }
    return e;
  });
  // Whether a job was paused for a moment (its start in a drained section) is timing, not order.
  return { replies, events: events.filter((e) => !(e.event === 'JOB_STATUS_CHANGE' && (e.data?.status === 'running' || e.data?.status === 'paused'))) };
}

async function both(script: Step[]) {
  const qsd = await startQsd(suite.dir, []);
  suite.daemons.push(qsd);
  for (const n of setup('qsd')) await qsd.qmp.ok('blockdev-add', n);
  const theirs = await runScript(qsd.qmp, script);
  await qsd.stop();
  suite.daemons.splice(suite.daemons.indexOf(qsd), 1);
  const ours = await startOurQmp(suite.layer, suite.dir);
  suite.daemons.push(ours);
  for (const n of setup('ours')) await ours.qmp.ok('blockdev-add', n);
  const mine = await runScript(ours.qmp, script);
  return { theirs, mine };
}

const statuses = (events: QmpEvent[]) => events.map((e) => (e.event === 'JOB_STATUS_CHANGE' ? `${e.data?.id}:${e.data?.status}` : `${e.event}:${e.data?.device}`));

describe.skipIf(!can)('transaction completion-mode grouped against qemu-storage-daemon', () => {
  it('both backups succeed: each waits for the other, then both finalize, newest first', { timeout: 120_000 }, async () => {
    const r = await both([{ cmd: 'transaction', args: grouped(backup('b1', 't1'), backup('b2', 't2', 4 << 20)), gone: ['b1', 'b2'] }]);
    expect(r.mine).toEqual(r.theirs);
    expect(statuses(r.theirs.events)).toEqual([
      'b1:created',
      'b2:created',
      'b1:waiting',
      'b2:waiting',
      'b2:pending',
      'b1:pending',
      'BLOCK_JOB_COMPLETED:b2',
      'b2:concluded',
      'b2:null',
      'BLOCK_JOB_COMPLETED:b1',
      'b1:concluded',
      'b1:null',
    ]);
  });

  it('one backup fails on its target: the other is cancelled; the same events in the same order', { timeout: 120_000 }, async () => {
    const r = await both([{ cmd: 'transaction', args: grouped(backup('b1', 't1', 65536), backup('b2', 'bad')), gone: ['b1', 'b2'] }]);
    expect(r.mine).toEqual(r.theirs);
    expect(statuses(r.theirs.events)).toEqual([
      'b1:created',
      'b2:created',
      'BLOCK_JOB_ERROR:b2',
      'b2:aborting',
      'BLOCK_JOB_COMPLETED:b2',
      'b2:concluded',
      'b2:null',
      'b1:aborting',
      'BLOCK_JOB_CANCELLED:b1',
      'b1:concluded',
      'b1:null',
    ]);
  });

  it('job-cancel of one cancels the other; actions without jobs are refused in a grouped transaction', { timeout: 120_000 }, async () => {
    const r = await both([
      { cmd: 'transaction', args: grouped(backup('c1', 't1', 65536), backup('c2', 't2', 65536)), wait: 200 },
      { cmd: 'job-cancel', args: { id: 'c2' }, gone: ['c1', 'c2'] },
      { cmd: 'transaction', args: grouped({ type: 'block-dirty-bitmap-add', data: { node: 'src', name: 'x' } }) },
      { cmd: 'transaction', args: grouped({ type: 'blockdev-snapshot-internal-sync', data: { device: 'src', name: 'x' } }) },
    ]);
    expect(r.mine).toEqual(r.theirs);
    expect(statuses(r.theirs.events)).toEqual([
      'c1:created',
      'c2:created',
      'c2:aborting',
      'BLOCK_JOB_CANCELLED:c2',
      'c2:concluded',
      'c2:null',
      'c1:aborting',
      'BLOCK_JOB_CANCELLED:c1',
      'c1:concluded',
      'c1:null',
    ]);
  });
});
